-- Memories: one row per version of an interaction, never updated in place.
-- Every row carries its tenant; every query filters by it.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE memories (
    tenant_id       text        NOT NULL,
    memory_id       uuid        NOT NULL,
    interaction_id  text        NOT NULL,
    version         integer     NOT NULL CHECK (version >= 1),
    customer_id     text        NOT NULL,
    channel         smallint    NOT NULL,
    direction       smallint    NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    text            text        NOT NULL,
    subject         text        NOT NULL,
    actor_id        text        NOT NULL,
    thread_id       text        NOT NULL,
    attributes      jsonb       NOT NULL,
    content_sha256  bytea       NOT NULL,
    enrichment      jsonb       NOT NULL,
    embedding       vector(384) NOT NULL,
    trace_id        text        NOT NULL,
    span_id         text        NOT NULL,
    PRIMARY KEY (tenant_id, memory_id),
    UNIQUE (tenant_id, interaction_id, version)
);

-- A customer's memories in time order (timeline, recall candidates, as_of filters).
CREATE INDEX memories_customer_time ON memories (tenant_id, customer_id, occurred_at, memory_id);
CREATE INDEX memories_customer_recorded ON memories (tenant_id, customer_id, recorded_at);
