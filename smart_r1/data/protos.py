"""The WOMD protos (`Scenario`, `Map`, submission) come from the `waymo-open-dataset-tf-2-12-0`
wheel, installed with `--no-deps` (its pins conflict with torch / ray; its protos need only
protobuf): `pip install --no-deps -r requirements-nodeps.txt` in a checkout, or the pins of the
shipped `smart_r1/metrics/requirements-official-nodeps.txt`. Without it, importing them fails with
`WomdProtosMissing`, which says so."""

from __future__ import annotations

from pathlib import Path

NODEPS_REQUIREMENTS = Path(__file__).resolve().parents[1] / "metrics" / "requirements-official-nodeps.txt"


class WomdProtosMissing(ModuleNotFoundError):
    """The waymo-open-dataset wheel (WOMD protos) is not installed; the message gives the command."""


def nodeps_wheels() -> list[str]:
    """The pinned wheels installed with --no-deps (`tf-keras==...`, `waymo-open-dataset-tf-2-12-0==...`)."""
    lines = NODEPS_REQUIREMENTS.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def protos_missing(err: ModuleNotFoundError) -> WomdProtosMissing:
    return WomdProtosMissing(
        f"{err}: the WOMD Scenario protos come from the waymo-open-dataset wheel, installed without its "
        f"dependencies: pip install --no-deps {' '.join(nodeps_wheels())} (from a checkout: "
        f"pip install --no-deps -r requirements-nodeps.txt)"
    )
