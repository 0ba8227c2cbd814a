"""The environment variables that carry the pipeline's secrets, named in one place.

The pipeline's own processes need them (steps hash with the privacy key and open the encrypted
warehouse); a program the pipeline starts for someone else (an alert hook run by ``/bin/sh``) must
not inherit them: it could log, forward or leak them, and a hook never needs one. Whatever starts
such a program passes ``without_secrets(os.environ)`` as its environment.
"""

from __future__ import annotations

from collections.abc import Mapping

PRIVACY_KEY_ENV_VAR = "CDM_PRIVACY_KEY"  # keyed hashes of erased people (suppression list)
WAREHOUSE_KEY_ENV_VAR = "CDM_WAREHOUSE_KEY"  # the warehouse's encryption key
# A key file's path is no key, but it tells a hook where the key lies.
WAREHOUSE_KEY_FILE_ENV_VAR = "CDM_WAREHOUSE_KEY_FILE"
WAREHOUSE_NEW_KEY_ENV_VAR = "CDM_WAREHOUSE_NEW_KEY"  # `cdm warehouse rotate-key` / `encrypt`
WAREHOUSE_NEW_KEY_FILE_ENV_VAR = "CDM_WAREHOUSE_NEW_KEY_FILE"

SECRET_ENV_VARS = frozenset({
    PRIVACY_KEY_ENV_VAR,
    WAREHOUSE_KEY_ENV_VAR,
    WAREHOUSE_KEY_FILE_ENV_VAR,
    WAREHOUSE_NEW_KEY_ENV_VAR,
    WAREHOUSE_NEW_KEY_FILE_ENV_VAR,
})


def without_secrets(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` without any of ``SECRET_ENV_VARS``: what a hook or other program may see."""
    return {name: value for name, value in environment.items() if name not in SECRET_ENV_VARS}
