"""Shipped enrichment artifacts (memcrm.models.train_enrichment)."""
