-- Decision records and their outcomes: what was recommended, why, and what came of it.

-- One row per NextBestAction answer, written in the same transaction that makes the answer
-- final: the full record (request, every action considered with its numbers or the reason it
-- was filtered, explanations, model version and artifact sha256, cited memories, trace id).
CREATE TABLE decisions (
    tenant_id          text        NOT NULL,
    recommendation_id  uuid        NOT NULL,
    customer_id        text        NOT NULL,
    decided_at         timestamptz NOT NULL,
    as_of              timestamptz NOT NULL,
    model_version      text        NOT NULL,
    model_sha256       text        NOT NULL,
    trace_id           text        NOT NULL,
    cited_memory_ids   uuid[]      NOT NULL,
    record             jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, recommendation_id)
);

-- ListRecommendations: a customer's decisions, newest first.
CREATE INDEX decisions_customer_time
    ON decisions (tenant_id, customer_id, decided_at DESC, recommendation_id DESC);

-- RecordOutcome: what happened to a recommended action. Append-only; the feedback loop joins
-- outcomes to the decision (and so to what was known at decision time).
CREATE TABLE outcomes (
    tenant_id          text        NOT NULL,
    outcome_id         uuid        NOT NULL,
    recommendation_id  uuid        NOT NULL,
    action_id          text        NOT NULL,
    outcome            smallint    NOT NULL,
    occurred_at        timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, outcome_id),
    FOREIGN KEY (tenant_id, recommendation_id) REFERENCES decisions (tenant_id, recommendation_id)
);

CREATE INDEX outcomes_decision ON outcomes (tenant_id, recommendation_id);
