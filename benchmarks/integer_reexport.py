"""Re-export the integer network of a run's grouped prior with this vqkit's export, exactly as
`vqkit prior train` does when it finishes (same held-out grids, same calibration grids, same record),
without training again: for measuring a newer export on a prior trained before it.

    python benchmarks/integer_reexport.py RUN_COPY

The float prior is unchanged; prior_integer.safetensors and the ``integer`` entry of
prior_config.json are replaced (the entry gains ``reexported``: this command and the date). Files
coded under the old integer network carry its digest in their fingerprint, so the new network
refuses them instead of misreading them: work on a copy of a run whose files must stay decodable.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from vqkit.config import from_dict
from vqkit.data import split_holdout
from vqkit.priors import checkpoint as pck
from vqkit.priors.config import PriorTrainConfig
from vqkit.priors.data import load_codes
from vqkit.priors.grouped import GroupedPrior
from vqkit.priors.train import export_integer_record
from vqkit.runs import Run, RunError, model_fingerprint


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder with a grouped prior (a copy: see above)")
    a = p.parse_args(argv)
    doc = pck.read_prior_doc(a.run)
    prior = pck.load_prior(a.run)
    if not isinstance(prior, GroupedPrior):
        raise RunError(f"{a.run}: its prior is {prior.config.kind}, not grouped")
    train_cfg = from_dict(PriorTrainConfig, doc["train"])
    codes = load_codes(Run.load(a.run), str(doc["data"]["spec"]), progress=False)
    _, val_idx = split_holdout(len(codes), train_cfg.holdout, seed=train_cfg.seed)
    fingerprint = model_fingerprint(a.run)
    integer, record = export_integer_record(
        prior, codes.subset(val_idx), data="holdout", eval_grids=train_cfg.eval_grids, fingerprint=fingerprint
    )
    record["reexported"] = {"argv": sys.argv, "date": datetime.now(UTC).isoformat(timespec="seconds")}
    old = doc.get("integer", {})
    keep = {k: v for k, v in doc.items() if k not in ("format", "format_version", "vqkit_version", "saved",
                                                       "model_fingerprint", "prior")}  # fmt: skip
    pck.save_prior(a.run, prior, info={**keep, "integer": record}, fingerprint=fingerprint, integer=integer)
    before = old.get("integer_bits_per_code", float("nan"))
    print(f"integer network: {record['integer_bits_per_code']:.4f} bits/code (float "
          f"{record['float_bits_per_code']:.4f}); before: {before:.4f}; "
          f"int32 layers: {', '.join(integer.int32_layers) or 'none'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
