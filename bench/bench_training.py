"""Training throughput of the five models on UCI Adult: MTLTrainer vs a minimal plain-PyTorch loop over the
same mtl_models model vs Torch-RecHub 0.9.0 (``pip install torch-rechub==0.9.0 --no-deps``) at one config.

Tasks: income > 50K and marital-status == Never-married (marital-status removed from the features).
Every column is a sparse feature (numeric ones cut into 16 train-quantile bins): Torch-RecHub's ESMM only
takes sparse features of one width, and one feature list keeps the five comparisons alike. Our MLPs keep
their default BatchNorm, as Torch-RecHub's MLP always has one. Each runner trains ``--epochs`` epochs
from the same seed; epoch times exclude the first (warm-up) epoch; runners alternate, the round is repeated ``--repeats``
times, and the table gives samples/s of each runner's fastest epoch (and the ratio of medians), which is
what survives a shared machine's noise.

    .venv/bin/python bench/bench_training.py --epochs 4 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mtl_models import Callback, MTLTrainer, SparseFeature, make_loader, zoo  # noqa: E402
from mtl_models.metrics import roc_auc  # noqa: E402

COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income"]
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
MODELS = [e.model_class.__name__ for e in zoo.entries()]  # the zoo's models, labelled by class name
RECHUB_MODELS = ["SharedBottom", "ESMM", "MMOE", "PLE", "AITM"]  # the ones Torch-RecHub 0.9.0 has too
EMBED, DIMS, TOWER, BATCH, LR = 16, [128, 64], [32], 1024, 1e-3


def load_adult(folder: Path) -> tuple[dict, dict, dict, dict, list[str], dict[str, int]]:
    read = dict(header=None, names=COLUMNS, sep=",", skipinitialspace=True, na_values="?", keep_default_na=False)
    train = pd.read_csv(folder / "adult.data", **read)
    test = pd.read_csv(folder / "adult.test", skiprows=1, **read)
    labels = {}
    for name, df in (("train", train), ("test", test)):
        income = df["income"].str.rstrip(".").eq(">50K").to_numpy(np.float32)
        never = df["marital-status"].eq("Never-married").to_numpy(np.float32)
        labels[name] = {"income": income, "never_married": never}
    feats = [c for c in COLUMNS if c not in ("income", "marital-status")]
    xs = {"train": {}, "test": {}}
    vocab = {}
    for c in feats:
        if c in NUMERIC:  # 16 quantile bins of the training column; id 0 stays for missing
            edges = np.unique(np.quantile(train[c].dropna(), np.linspace(0, 1, 17)[1:-1]))
            enc = lambda s: np.where(s.isna(), 0, np.searchsorted(edges, s.fillna(0), side="right") + 1)  # noqa: E731
            vocab[c] = len(edges) + 2
        else:  # ids by training frequency, 0 for missing or unseen
            cats = train[c].dropna().value_counts().index
            mapping = {v: i + 1 for i, v in enumerate(cats)}
            enc = lambda s, m=mapping: s.map(m).fillna(0).to_numpy()  # noqa: E731
            vocab[c] = len(cats) + 1
        for name, df in (("train", train), ("test", test)):
            xs[name][c] = np.asarray(enc(df[c]), dtype=np.int64)
    return xs["train"], labels["train"], xs["test"], labels["test"], feats, vocab


# where Torch-RecHub's model differs from the zoo's at this config: its ESMM has its towers on the embeddings
_AS_RECHUB = {"ESMM": {"bottom_dims": [], "tower_dims": DIMS + TOWER}}


def ours(name: str, feats: list[str], vocab: dict[str, int]):
    """The zoo model whose class is ``name``: every bottom / expert MLP ``DIMS``, towers ``TOWER``, BatchNorm (as
    Torch-RecHub's MLP), no dropout, the zoo's default counts (8 MMOE experts, PLE 2 levels of 2 + 2)."""
    entry = next((e for e in zoo.entries() if e.model_class.__name__ == name), None)
    if entry is None:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    features = [SparseFeature(c, vocab[c], EMBED) for c in feats]
    params = {k: list(DIMS) for k in zoo.defaults(entry.name) if k.endswith("_dims")}
    params.update(tower_dims=list(TOWER), norm="batch", dropout=0.0, activation="relu")
    params.update(_AS_RECHUB.get(name, {}))
    return zoo.build(entry.name, features, ["classification", "classification"], params)


def rechub(name: str, feats: list[str], vocab: dict[str, int]):
    if name not in RECHUB_MODELS:
        raise ValueError(f"Torch-RecHub 0.9.0 has no {name}; it has {RECHUB_MODELS}")
    from torch_rechub.basic.features import SparseFeature as RSparse
    from torch_rechub.models import multi_task as rm
    features = [RSparse(c, vocab[c], EMBED) for c in feats]
    mlp = {"dims": DIMS}
    towers = [{"dims": TOWER}] * 2
    tt = ["classification", "classification"]
    if name == "SharedBottom":
        return rm.SharedBottom(features, tt, mlp, towers)
    if name == "ESMM":
        return rm.ESMM(features[:6], features[6:], {"dims": DIMS + TOWER}, {"dims": DIMS + TOWER})
    if name == "MMOE":
        return rm.MMOE(features, tt, 8, mlp, towers)
    if name == "PLE":
        return rm.PLE(features, tt, 2, 2, 2, mlp, towers)
    return rm.AITM(features, 2, mlp, towers)


Between = Optional[Callable[[float], None]]  # called after each epoch with its seconds; returns when the next may start


class _EpochClock(Callback):
    """Each epoch's seconds, from fit start or the previous epoch's end to this epoch's end (checkpoint included);
    time spent in ``between`` is not counted."""

    def __init__(self):
        self.times: list[float] = []
        self.between: Between = None
        self._start = 0.0

    def on_fit_start(self, trainer):
        self._start = time.perf_counter()

    def on_epoch_end(self, trainer, epoch, metrics):
        self.times.append(time.perf_counter() - self._start)
        if self.between is not None:
            self.between(self.times[-1])
        self._start = time.perf_counter()


class OursRunner:
    label = "mtl_models MTLTrainer"

    def __init__(self, name, data, feats, vocab, out, compile=False, auxiliary_weight=None, device="cpu",
                 mixed_precision=None):
        torch.manual_seed(0)
        self.model = ours(name, feats, vocab)
        self.loader = make_loader(data["x"], data["y"], BATCH, shuffle=True, seed=0)
        self.test = make_loader(data["xt"], data["yt"], 8192)
        self.clock = _EpochClock()
        self.trainer = MTLTrainer(self.model, optimizer_params={"lr": LR}, n_epoch=1, device=device,
                                  model_path=out, progress=False, compile=compile, callbacks=[self.clock],
                                  auxiliary_weight=auxiliary_weight, mixed_precision=mixed_precision, retain_cpu_memory=True)

    def run(self, epochs: int, between: Between = None) -> list[float]:
        """One ordinary ``fit`` (checkpoints included); epoch times from a callback's clock."""
        self.trainer.n_epoch = epochs
        self.clock.times, self.clock.between = [], between
        self.trainer.fit(self.loader)
        return list(self.clock.times)

    def test_auc(self):
        s = self.trainer.evaluate(self.trainer.model, self.test)
        return [s["income"]["auc"], s["never_married"]["auc"]]


class CompiledOursRunner(OursRunner):
    """MTLTrainer(compile=True): Inductor compiles the training forward and backward during the first epoch, which
    part 4 counts as warm-up."""
    label = "mtl_models MTLTrainer, compile=True"

    def __init__(self, name, data, feats, vocab, out):
        super().__init__(name, data, feats, vocab, out, compile=True)


def _timed(step, epochs: int, between: Between = None) -> list[float]:
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if between is not None:
            between(times[-1])
    return times


class PlainRunner:
    """The minimal loop: contiguous tensors, a seeded permutation per epoch, forward, BCE, backward, Adam."""
    label = "plain PyTorch loop"

    def __init__(self, name, data, feats, vocab, out):
        torch.manual_seed(0)
        self.model = ours(name, feats, vocab)
        self.x = {k: torch.from_numpy(v.copy()) for k, v in data["x"].items()}
        # the model's training targets, per row (ESMM: click and click x conversion)
        self.y = self.model.training_targets(torch.from_numpy(np.stack([data["y"]["income"], data["y"]["never_married"]], 1)))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.data, self.epoch = data, 0

    def run(self, epochs: int, between: Between = None) -> list[float]:
        return _timed(self.train_epoch, epochs, between)

    def loss(self, pred, y):
        return F.binary_cross_entropy(pred, y)  # mean over tasks and rows

    def train_epoch(self):
        self.model.train()
        perm = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.epoch))
        x = {k: v[perm] for k, v in self.x.items()}
        y = self.y[perm]
        for i in range(0, len(y), BATCH):
            pred = self.model({k: v[i:i + BATCH] for k, v in x.items()})
            loss = self.loss(pred, y[i:i + BATCH])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        self.epoch += 1

    def test_auc(self):
        self.model.eval()
        with torch.no_grad():
            p = self.model({k: torch.from_numpy(v) for k, v in self.data["xt"].items()}).numpy()
        yt = self.model.training_targets(torch.from_numpy(
            np.stack([self.data["yt"]["income"], self.data["yt"]["never_married"]], 1))).numpy()
        return [roc_auc(yt[:, i], p[:, i]) for i in range(2)]


class PlainRecHubRunner(PlainRunner):
    """The same minimal loop over Torch-RecHub's own model: what its module costs per step without its trainer,
    so that the gap between libraries splits into model compute and trainer overhead."""
    label = "plain loop, Torch-RecHub model"

    def __init__(self, name, data, feats, vocab, out):
        torch.manual_seed(0)
        self.name = name
        self.model = rechub(name, feats, vocab)
        self.x = {k: torch.from_numpy(v.copy()) for k, v in data["x"].items()}
        cols, _ = rechub_labels(name)
        self.y = torch.from_numpy(cols(data["y"]).astype(np.float32))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.data, self.epoch = data, 0

    def loss(self, pred, y):
        trained = slice(1, 3) if self.name == "ESMM" else slice(0, 2)  # its ESMM trains on (ctr, ctcvr)
        return F.binary_cross_entropy(pred[:, trained], y[:, trained])

    def test_auc(self):
        self.model.eval()
        with torch.no_grad():
            p = self.model({k: torch.from_numpy(v) for k, v in self.data["xt"].items()}).numpy()
        cols, _ = rechub_labels(self.name)
        yt = cols(self.data["yt"])
        trained = [1, 2] if self.name == "ESMM" else [0, 1]
        return [roc_auc(yt[:, i], p[:, i]) for i in trained]


def rechub_labels(name: str):
    """Torch-RecHub's label layout for ``name``: a function dict-of-labels -> [N, k] array, and its task types.

    Its ESMM trainer wants (cvr, ctr, ctcvr) columns and trains on the last two."""
    if name == "ESMM":
        return (lambda d: np.stack([d["never_married"], d["income"], d["income"] * d["never_married"]], 1),
                ["classification"] * 3)
    return lambda d: np.stack([d["income"], d["never_married"]], 1), ["classification"] * 2


class RecHubRunner:
    label = "Torch-RecHub 0.9.0"

    def __init__(self, name, data, feats, vocab, out, device="cpu"):
        from torch_rechub.trainers import MTLTrainer as RTrainer
        from torch_rechub.utils.data import DataGenerator as RGen
        torch.manual_seed(0)
        self.name = name
        self.model = rechub(name, feats, vocab)
        y, yt = data["y"], data["yt"]
        cols, types = rechub_labels(name)
        self.train_dl, _, _ = RGen(data["x"], cols(y)).generate_dataloader(
            x_val=data["xt"], y_val=cols(yt), x_test=data["xt"], y_test=cols(yt), batch_size=BATCH)
        _, self.test_dl, _ = RGen(data["xt"], cols(yt)).generate_dataloader(
            x_val=data["xt"], y_val=cols(yt), x_test=data["xt"], y_test=cols(yt), batch_size=8192)
        out.mkdir(parents=True, exist_ok=True)
        self.trainer = RTrainer(self.model, types, optimizer_params={"lr": LR, "weight_decay": 0.0}, n_epoch=1,
                                device=device, model_path=str(out))

    def run(self, epochs: int, between: Between = None) -> list[float]:
        return _timed(lambda: self.trainer.train_one_epoch(self.train_dl), epochs, between)  # its fit() adds validation

    def test_auc(self):
        s = self.trainer.evaluate(self.model, self.test_dl)
        return [s[1], s[2]] if self.name == "ESMM" else s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/shared/data/adult")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--compile", action="store_true", help="MTLTrainer(compile=True)")
    ap.add_argument("--auxiliary-weight", type=float, default=None,
                    help="MTLTrainer(auxiliary_weight=...): AITM's calibration weight (default: the model's 0.6)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y, xt, yt, feats, vocab = load_adult(Path(args.data))
    data = {"x": x, "y": y, "xt": xt, "yt": yt}
    n = len(y["income"])
    import io, contextlib  # noqa: E401  (Torch-RecHub prints every epoch; keep the table readable)
    runners = [("ours", OursRunner), ("plain", PlainRunner), ("rechub", RecHubRunner)]
    rows = []
    for name in args.models:
        mine = [(k, c) for k, c in runners if k != "rechub" or name in RECHUB_MODELS]
        times = {k: [] for k, _ in mine}
        auc = {}
        for rep in range(args.repeats):
            order = mine if rep % 2 == 0 else mine[::-1]
            for key, cls in order:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    kw = {"compile": args.compile, "auxiliary_weight": args.auxiliary_weight} if key == "ours" else {}
                    r = cls(name, data, feats, vocab, out / "ckpt" / f"{name}_{key}_{rep}", **kw)
                    times[key] += r.run(args.epochs)[1:]  # the first epoch is warm-up
                    auc[key] = r.test_auc()
        best = {k: n / min(v) for k, v in times.items()}
        median = {k: n / float(np.median(v)) for k, v in times.items()}
        row = {"model": name, **{f"{k}_samples_s": round(v) for k, v in best.items()},
               **{f"{k}_median_samples_s": round(v) for k, v in median.items()},
               **{f"{k}_test_auc": [round(a, 4) for a in v] for k, v in auc.items()}}
        row["vs_plain"] = round(best["ours"] / best["plain"], 2)
        row["median_vs_plain"] = round(median["ours"] / median["plain"], 2)
        if "rechub" in best:
            row["vs_rechub"] = round(best["ours"] / best["rechub"], 2)
            row["plain_vs_rechub"] = round(best["plain"] / best["rechub"], 2)
            row["median_vs_rechub"] = round(median["ours"] / median["rechub"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "epochs": args.epochs, "repeats": args.repeats, "batch": BATCH, "compile": args.compile, "auxiliary_weight": args.auxiliary_weight,
            "load_avg": os.getloadavg(), "train_rows": n}
    (out / "bench_training.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\n{meta}\n")
    print("| model | MTLTrainer samples/s | plain loop samples/s | Torch-RecHub samples/s | ours/TRH (median) "
          "| ours/plain (median) | test AUC income, never-married: ours / plain / TRH |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        a = " / ".join(",".join(f"{v:.4f}" for v in r.get(f"{k}_test_auc", [])) or "-" for k in ("ours", "plain", "rechub"))
        trh = f"{r['vs_rechub']}x ({r['median_vs_rechub']}x)" if "vs_rechub" in r else "-"
        print(f"| {r['model']} | {r['ours_samples_s']} | {r['plain_samples_s']} | {r.get('rechub_samples_s', '-')} "
              f"| {trh} | {r['vs_plain']}x ({r['median_vs_plain']}x) | {a} |")


if __name__ == "__main__":
    main()
