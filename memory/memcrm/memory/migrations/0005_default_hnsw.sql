-- Back to pgvector's default HNSW graph (m 16, ef_construction 64). The lighter graph of 0004
-- cut index maintenance per insert (0.6 ms vs 2.1 ms in-process) but did not raise IngestBatch
-- throughput through the service (0.467 vs 0.484 of the bare encoder in the same benchmark),
-- while at 1M memories it halved the candidates' recall against exact search (0.36 vs 0.66 of
-- the true 40 nearest at ef_search 100; top-10 overlap 0.65 vs 0.80; scripts/bench_scale.py).
DROP INDEX memories_embedding_hnsw;
CREATE INDEX memories_embedding_hnsw ON memories USING hnsw (embedding vector_cosine_ops);
