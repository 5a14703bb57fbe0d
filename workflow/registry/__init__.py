"""Model registry: every candidate a version (:mod:`.versions`), ``champion`` only through promotion
(:mod:`.promotion`, selected on validation and decided by the paired rule, :mod:`.rule`, on the validation rows both
versions are scored on through their logged models, :mod:`.rescore`; or by the margin rule), one promotion at a time
(:mod:`.lock`); ``mtlp compare`` (:mod:`.compare`) puts two versions side by side on the same rows."""

from .lock import LOCK_SUFFIX, LOCK_TAG, PromotionLock, PromotionLockError, promotion_lock_holder
from .promotion import (REPORT_METRIC, SELECT_METRIC, PromotionDecision, promote, promote_best, promote_version,
                        rollback)
from .versions import (CHALLENGER, CHAMPION, TAG, RegistryError, audit, candidate_score, challenger_version,
                       champion_history, champion_version, current_user, data_fingerprint, register_candidate,
                       version_rows)

__all__ = [
    "CHAMPION", "CHALLENGER", "TAG", "PromotionDecision", "RegistryError", "register_candidate", "candidate_score",
    "data_fingerprint", "promote", "promote_best", "promote_version", "rollback", "champion_version",
    "challenger_version", "champion_history", "current_user", "PromotionLock", "PromotionLockError", "LOCK_SUFFIX",
    "LOCK_TAG", "promotion_lock_holder", "SELECT_METRIC", "REPORT_METRIC", "audit", "version_rows",
]
