"""Shipped enrichment artifacts (see memcrm.models.train_enrichment)."""
