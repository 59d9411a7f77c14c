"""Deciding the next best action, end to end, for the service layer to call.

Per decision: redact the current message under the tenant's PII policy; embed it (and read its
intent when the tenant's catalog weighs actions by intent); recall the customer's memories as
of the decision's ``as_of``; gather the profile, contact/outcome history, consent and
attributes (``memcrm.decisions.gather``; in another thread, while the context is embedded);
score, arbitrate and explain with the tenant's active model version (``memcrm.models.registry``,
activations in ``memcrm.memory.activations``, read for every decision so that an activation
reaches every replica at once); and write the full decision record before
answering. Replays recompute a recorded decision the same way, as of its ``as_of``, with the
model version that made it.

Tenant catalogs are reloaded by a watcher thread when their files change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from memcrm.core.errors import ConfigError, InvalidArgument, NotFound
from memcrm.core.settings import Settings
from memcrm.core.tenants import TenantConfigs
from memcrm.core.tracing import child_span
from memcrm.core.types import DecisionRecord, DecisionRequest
from memcrm.decisions.gather import CustomerFacts
from memcrm.decisions.policy import DecisionContext
from memcrm.decisions.predictions import CustomerPredictions
from memcrm.decisions.recommender import DecisionAudit, Recommender
from memcrm.decisions.record import decision_record
from memcrm.decisions.replay import Replay, cannot_replay, compare
from memcrm.decisions.tenant_catalog import TenantCatalog, TenantCatalogs
from memcrm.interpret.pipeline import Interpreter
from memcrm.memory.activations import Activation, Activations
from memcrm.memory.decisions import DecisionStore
from memcrm.memory.hot import HotState
from memcrm.memory.profile import Profiles
from memcrm.memory.recall import MemoryReader
from memcrm.memory.store import MemoryStore
from memcrm.models.encoder import Encoder
from memcrm.models.enrichment import EnrichmentModel
from memcrm.models.nba import ScoringPrecision, as_scoring_precision
from memcrm.models.query_encoder import QueryEncoder
from memcrm.models.registry import ModelEntry, ModelRegistry

log = logging.getLogger(__name__)

A = TypeVar("A")


class DecisionService:
    """Next best action for a customer, its record, its replay, and model versions."""

    def __init__(
        self,
        settings: Settings,
        store: MemoryStore,
        hot: HotState,
        encoder: Encoder,
        query_encoder: QueryEncoder,
    ) -> None:
        """``encoder`` (one thread: decisions encode one short message) is shared with the
        caller's ``query_encoder``, which embeds the context when no intent is needed."""
        # When the tenant's catalog weighs actions by the context's intent, the context is
        # understood as ingestion understands a message (one pass: embedding and intent).
        self._model = EnrichmentModel(intents_dir=settings.intents_dir, encoder=encoder)
        self._query_encoder = query_encoder
        self._tenants = TenantConfigs.load(settings.tenants_dir)
        # The current message is held to the tenant's PII policy like a memory: redacted
        # before it is embedded, recalled with or written into the decision record.
        self._interpreter = Interpreter(self._model, self._tenants)
        self._reader = MemoryReader(store, encoder)
        self._decisions = DecisionStore(store)
        # Catalog rules may read the customer's predictions (prediction.churn_risk, ...).
        predictions = CustomerPredictions.configured(store, settings)
        self._facts = CustomerFacts(
            store, Profiles(store, hot), self._decisions, predictions.scores
        )
        self._encoder = encoder
        self._registry = ModelRegistry(settings.model_registry_dir, settings.nba_model_dir)
        self._activations = Activations(store)
        self._readers = ThreadPoolExecutor(FACT_READERS, thread_name_prefix="memcrm-facts")
        self._recommenders: dict[str, Recommender] = {}
        self._lock = threading.Lock()
        default = self._recommender_of(self._registry.default.version)
        # Catalog files must be scorable by the default model; an activation checks its own.
        self._catalogs = TenantCatalogs.load(settings.catalogs_dir, check=default.check_catalog)
        self._memories = settings.decision_memories
        self._scoring_precision: ScoringPrecision = settings.scoring_precision
        if settings.catalogs_dir is not None and settings.catalog_reload_s > 0:
            watcher = CatalogWatcher(self._catalogs, settings.catalogs_dir)
            threading.Thread(
                target=watcher.run,
                args=(settings.catalog_reload_s,),
                name="memcrm-catalogs",
                daemon=True,
            ).start()

    def decide(
        self,
        tenant_id: str,
        request: DecisionRequest,
        trace_id: str,
        carrier: dict[str, str],
        answer: Callable[[DecisionRecord], A],
    ) -> tuple[DecisionRecord, A]:
        """Decide, write the full decision record, and only then answer: the record and
        ``answer(record)`` (the caller's response, e.g. its protobuf message), which is built in
        another thread while the record is written and returned only once it is committed."""
        request = replace(
            request, context=self._interpreter.redacted_text(tenant_id, request.context)
        )
        decided_at = datetime.now(UTC)
        view = request.as_of or decided_at
        # The tenant's active model version is read while the context is embedded.
        serving = self._readers.submit(self._serving, tenant_id)
        audit, embedded_in = self._audit(
            tenant_id, request, view, carrier, serving, self._scoring_precision
        )
        record = decision_record(request, audit, decided_at, view, trace_id, embedded_in)
        answered = self._readers.submit(answer, record)
        with child_span("memcrm.decision_record", carrier):
            self._decisions.save(tenant_id, record)
        return record, answered.result()

    def replay(self, tenant_id: str, recommendation_id: str, carrier: dict[str, str]) -> Replay:
        """Recompute a recorded decision from what was known at its ``as_of`` and compare."""
        original = self._decisions.get(tenant_id, recommendation_id)
        try:
            recommender = self._recommender_of(original.model_version)
        except NotFound:
            return cannot_replay(
                f"model {original.model_version}, which decided it, is not in the registry"
            )
        if recommender.model_sha256 != original.model_sha256:
            return cannot_replay(
                f"model {original.model_version} in the registry has sha256 "
                f"{recommender.model_sha256}, the decision's had {original.model_sha256}"
            )
        catalog_version = self._catalogs.get(tenant_id).version
        if original.catalog_version != catalog_version:
            return cannot_replay(
                f"it was decided under catalog version {original.catalog_version!r}; the "
                f"tenant's catalog is now version {catalog_version!r}"
            )
        scoring = as_scoring_precision(original.arithmetic.scoring)
        if scoring is None:
            return cannot_replay(
                f"it was scored in {original.arithmetic.scoring!r}, which this server cannot do"
            )
        recorded_encoder = original.arithmetic.context_encoder
        encoder = self._context_encoder(tenant_id, original.request.context)
        if recorded_encoder and recorded_encoder != encoder:
            return cannot_replay(
                f"its context was embedded in {recorded_encoder}; this server would embed it in "
                f"{encoder} (MEMCRM_QUERY_ENCODER_PRECISION and the CPU decide)"
            )
        # The original read the profile's hot state when it had no as_of; PostgreSQL rebuilds
        # the same state as of the same moment.
        request = replace(original.request, as_of=original.as_of)
        audit, embedded_in = self._audit(
            tenant_id, request, original.as_of, carrier, _done(recommender), scoring
        )
        if not recorded_encoder:  # not kept (an older record): compare the rest
            embedded_in = ""
        replayed = replace(
            decision_record(
                original.request,
                audit,
                original.decided_at,
                original.as_of,
                original.trace_id,
                embedded_in,
            ),
            recommendation_id=original.recommendation_id,
        )
        return compare(original, replayed)

    def _audit(
        self,
        tenant_id: str,
        request: DecisionRequest,
        view: datetime,
        carrier: dict[str, str],
        recommender: Future[Recommender],
        precision: ScoringPrecision,
    ) -> tuple[DecisionAudit, str]:
        """Recall, gather what is known about the customer and decide, as of ``view``, with
        ``recommender`` (which may still be being looked up) scoring in ``precision``; also
        returns the format the context was embedded in ("" for no context)."""
        catalog = self._catalogs.get(tenant_id)
        # What is known about the customer does not depend on the context: it is read in
        # another thread while the encoder (which releases the GIL) embeds the context.
        facts = self._readers.submit(
            self._facts.inputs,
            tenant_id,
            request.customer_id,
            catalog,
            DecisionContext(request.channel, view, request.context),
            as_of=request.as_of,
        )
        with child_span(
            "memcrm.understand", carrier, {"memcrm.context_chars": len(request.context)}
        ):
            # One encoder pass: the context is the recall query, a model input, and its
            # intent feeds the catalog's context weights.
            intent, context_vector, embedded_in = self._understand(
                tenant_id, request.context, catalog
            )
        with child_span("memcrm.recall", carrier, {"memcrm.top_k": self._memories}):
            recalled = self._reader.recall_embedded(
                tenant_id,
                request.customer_id,
                context_vector,
                top_k=self._memories,
                as_of=view,
                query_text=request.context,
            )
            gathered = facts.result()
            inputs = replace(
                gathered,
                context=DecisionContext(request.channel, view, request.context, intent),
            )
        with child_span(
            "memcrm.decide",
            carrier,
            {
                "memcrm.memories": len(recalled),
                "memcrm.catalog_version": catalog.version,
            },
            links=[r.memory.ingest_trace for r in recalled],
        ):
            audit = recommender.result().decide_audited(
                recalled,
                inputs,
                request.top_n,
                context_embedding=context_vector,
                precision=precision,
            )
        return audit, embedded_in

    def models(self, tenant_id: str) -> tuple[list[ModelEntry], str]:
        """Every registered model version, and the one serving the tenant."""
        return self._registry.entries(), self._serving(tenant_id).model_version

    def activate(self, tenant_id: str, version: str, by: str) -> tuple[Activation, str]:
        """Serve ``version`` to the tenant from its next decision on; returns the activation
        and the version it replaces. Refused (ConfigError as InvalidArgument) when the model
        cannot score the tenant's catalog."""
        if not version:
            raise InvalidArgument("version", "is required")
        recommender = self._recommender_of(version)  # NotFound for an unknown version
        try:
            recommender.check_catalog(self._catalogs.get(tenant_id))
        except ConfigError as exc:
            raise InvalidArgument("version", exc.message) from None
        previous = self._serving(tenant_id).model_version
        activation = self._activations.activate(tenant_id, version, by)
        return activation, previous

    def _serving(self, tenant_id: str) -> Recommender:
        """The recommender of the tenant's active model version, read from PostgreSQL for
        every decision: an activation committed by any replica serves the next decision on
        every replica (one indexed read of a small table, in a reader thread)."""
        active = self._activations.active(tenant_id)
        return self._recommender_of(
            self._registry.default.version if active is None else active.version
        )

    def _recommender_of(self, version: str) -> Recommender:
        with self._lock:
            recommender = self._recommenders.get(version)
        if recommender is None:
            recommender = Recommender(self._encoder, self._registry.scorer(version))
            with self._lock:
                recommender = self._recommenders.setdefault(version, recommender)
        return recommender

    def _understand(
        self, tenant_id: str, context: str, catalog: TenantCatalog
    ) -> tuple[str, NDArray[np.float32] | None, str]:
        """The context's intent, its embedding (None for an empty context) and the format it
        was embedded in (``_context_encoder``). The intent is read only for a catalog with
        intent-keyed context weights: its top intent when at least ``INTENT_MIN_CONFIDENCE``
        confident, else ""."""
        embedded_in = self._context_encoder(tenant_id, context, catalog)
        if not context.strip():
            return "", None, embedded_in
        if not _reads_intent(catalog):
            return "", self._query_encoder.encode([context])[0], embedded_in
        intent_set = self._tenants.get(tenant_id).intents.set
        out = self._model.run([context], intent_set=intent_set)
        top = out.intents[0][0] if out.intents[0] else None
        intent = top.name if top is not None and top.confidence >= INTENT_MIN_CONFIDENCE else ""
        return intent, out.embeddings[0], embedded_in

    def _context_encoder(
        self, tenant_id: str, context: str, catalog: TenantCatalog | None = None
    ) -> str:
        """The format ``_understand`` embeds ``context`` in: the query encoder's, or the full
        encoder's (float32) when the catalog needs the context's intent; "" for no context."""
        if not context.strip():
            return ""
        if _reads_intent(catalog or self._catalogs.get(tenant_id)):
            return self._encoder.precision
        return self._query_encoder.precision


# Threads that read customer facts and the active model version while decisions embed their
# contexts, and build answers while decision records are written.
FACT_READERS = 8

# A context weight keyed on an intent applies when the current message's top intent is at
# least this confident: below it the intent head is guessing among 77 labels.
INTENT_MIN_CONFIDENCE = 0.5


class CatalogWatcher:
    """Reloads the tenant catalogs when a file in their directory changes (a reload re-reads
    and re-validates every file; a refused file leaves its tenant on the catalog it had)."""

    def __init__(self, catalogs: TenantCatalogs, directory: Path) -> None:
        self._catalogs = catalogs
        self._directory = directory
        self._seen = self.fingerprint()

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """Name, size and modification time of every file: what a change would alter."""
        try:
            entries = sorted(self._directory.iterdir())
        except OSError:
            return ()
        out = []
        for path in entries:
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((path.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def check(self) -> bool:
        """Reload when something changed since the last check; True when it reloaded."""
        now = self.fingerprint()
        if now == self._seen:
            return False
        self._seen = now
        error = self._catalogs.reload()
        if error is not None:
            log.warning("memcrm.catalogs: %s", error.message)
        else:
            log.info("memcrm.catalogs: reloaded %s", self._directory)
        return True

    def run(self, every_s: float) -> None:
        while True:
            time.sleep(every_s)
            try:
                self.check()
            except Exception:  # a watcher that dies silently would stop reloads for good
                log.exception("memcrm.catalogs: reload failed")


def _reads_intent(catalog: TenantCatalog) -> bool:
    """Whether the catalog weighs actions by the current message's intent."""
    return any(w.intent is not None for w in catalog.context_weights)


def _done(value: Recommender) -> Future[Recommender]:
    """``value`` as a future that already has it."""
    future: Future[Recommender] = Future()
    future.set_result(value)
    return future
