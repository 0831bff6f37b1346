"""Trusting imported artifact versions after the fact (``Store.trust``).

An import marks every artifact version untrusted: its pickles were signed
under another store's secret and refuse to load, and loading it imports no
module it names. Trusting a version signs its pickles again with this store's
secret (the bytes are not touched, only the signatures in its materializer
state) and records an ``artifact.trusted`` event carrying the new state, so a
rebuild or ``as_of`` folds to the same answer.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from engine.errors import StoreSecretError
from engine.events import ARTIFACT_TRUSTED

if TYPE_CHECKING:
    from engine.query.models import ArtifactVersion
    from engine.store import Store


def signed_pickles(state: Any) -> int:
    """How many signed files (pickles) a materializer state holds, elements included."""
    if not isinstance(state, dict):
        return 0
    own = 1 if "signature" in state else 0
    elements = state.get("elements")
    if not isinstance(elements, dict):
        return own
    return own + sum(signed_pickles(s) for s in elements.values())


def trust(store: Store, art: ArtifactVersion) -> tuple[ArtifactVersion, int]:
    """Trust one live artifact version; (the version now, pickles signed again).
    A version that is trusted already is returned as it is (no event)."""
    from materializers.cloudpickle_materializer import resign_pickles

    rec = art.record()
    if not rec.get("untrusted"):
        return art, 0
    problem = store.ledger.secret_problem
    if problem is not None:
        raise StoreSecretError(
            f"cannot trust artifact {art.name}:{art.version}: {problem}; restore the "
            "store's secret first"
        )
    files = store.catalog._files({**rec, "state": copy.deepcopy(rec.get("state") or {})})
    try:
        signed = resign_pickles(files)
    finally:
        files.cleanup()
    data = {"id": art.id, "state": files.state}
    store.ledger.commit(lambda txn: [(ARTIFACT_TRUSTED, data)])
    return store.get_artifact_by_id(art.id), signed
