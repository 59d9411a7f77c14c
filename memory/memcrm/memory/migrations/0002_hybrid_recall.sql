-- Hybrid recall, bitemporal visibility and near-duplicate links.

-- Transaction time as an interval: a version is visible to an as_of query when
-- recorded_at <= as_of < superseded_at. superseded_at is set once, when the next version is
-- recorded; the memory's content is never changed. (Replaces DISTINCT ON over versions, which
-- no index can serve for tenant-wide search.)
ALTER TABLE memories ADD COLUMN superseded_at timestamptz;
UPDATE memories m SET superseded_at = n.recorded_at
  FROM memories n
 WHERE n.tenant_id = m.tenant_id AND n.interaction_id = m.interaction_id
   AND n.version = m.version + 1;

-- Lexical match: PostgreSQL full-text search over subject and text (English stemming).
ALTER TABLE memories ADD COLUMN lexemes tsvector
  GENERATED ALWAYS AS (to_tsvector('english', subject || ' ' || text)) STORED;

-- Near-duplicates (the same complaint by email and again as a ticket): every memory of a
-- cluster points at the cluster's first memory; recall returns one memory per cluster.
ALTER TABLE memories ADD COLUMN near_duplicate_of uuid;
ALTER TABLE memories ADD COLUMN near_duplicate_similarity real;

-- Tenant-wide search (SearchMemories): approximate nearest neighbours with filtering (pgvector
-- iterative index scans) and full-text candidates.
CREATE INDEX memories_embedding_hnsw ON memories USING hnsw (embedding vector_cosine_ops);
CREATE INDEX memories_lexemes ON memories USING gin (lexemes);
CREATE INDEX memories_tenant_occurred ON memories (tenant_id, occurred_at);
