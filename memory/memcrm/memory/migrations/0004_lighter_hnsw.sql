-- A lighter HNSW graph for tenant-wide search: m = 8, ef_construction = 32 instead of
-- pgvector's defaults (16, 64). Every ingested memory is inserted into this graph inside the
-- ingest transaction; with the defaults, index maintenance cost more CPU than everything else
-- the store does per memory (measured on 2 cores, 7k rows: +2.1 ms per insert vs +0.6 ms),
-- and ingestion competes with the encoder for the same cores. Search stays filtered and
-- iterative (hnsw.iterative_scan, ef_search 100) and its candidates are re-scored exactly.
DROP INDEX memories_embedding_hnsw;
CREATE INDEX memories_embedding_hnsw ON memories
  USING hnsw (embedding vector_cosine_ops) WITH (m = 8, ef_construction = 32);
