-- Which model version serves each tenant: an append-only log of activations (the latest wins),
-- so an auditor can tell which version was active when, and who switched it.
CREATE TABLE model_activations (
    tenant_id     text        NOT NULL,
    model         text        NOT NULL,
    version       text        NOT NULL,
    activated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    activated_by  text        NOT NULL,
    PRIMARY KEY (tenant_id, model, activated_at)
);
