"""LightGBM on the pair features (handcrafted + ``graph_*`` question-graph features).

Early stopping watches each fold's validation part. Deterministic: ``deterministic=True`` with
column-wise histograms forced (LightGBM otherwise picks row/col-wise by timing), a fixed seed, and a
fixed thread count. Column-wise rather than row-wise because it fits faster at Kaggle size and gives
the same predictions on the real rows (BENCHMARKS.md, section lgbm-defaults).

The defaults suit both the ~10k-row real sample and the 404k Kaggle train set: a slow learning
rate with early stopping picks the number of trees, and ``min_data_in_leaf`` grows with the data
(``auto``: ~0.1% of the rows, at least 20) so small data do not overfit in leaves of a few rows.
The learning rate and ``max_bin`` were chosen for speed at Kaggle size with the CV log loss on the real
rows kept (BENCHMARKS.md, section lgbm-defaults), and 63 leaves rather than 31: for the same CV log loss on
the real rows early stopping keeps fewer of the larger trees, which at Kaggle size, where each costs more to
fit and more still to predict with, comes to a little less time with the refit below (section lgbm-leaves).

Besides the pair features, the trees get the 2,000 most used columns (``--lgbm-bow-columns``; 0
for the pair features alone) of the word TF-IDF pair blocks |q1 - q2| and q1 * q2 (sparse), so they
can also split on which words differ or are shared; the columns are picked by how many train pairs
use them (no labels involved).

Threads: ``config.n_workers()``, but one thread per 20,000 train rows at most: on small data
LightGBM's OpenMP threads cost more than they gain. The count is recorded in the parameters because the
floating-point summation order, hence the last digits of the model, depend on it.

Test predictions: once the folds are done, one more booster is fitted on every train row, for the fold
models' mean kept rounds times the rows ratio (all rows over a fold's train rows: early stopping keeps more
rounds on more rows, BENCHMARKS.md section lgbm-rounds), and it alone predicts the test set (the CV engine's
refit): the test set is predicted once instead of once per fold, which at Kaggle size was about half of the
stage's time. On the real rows, with each fold standing in for the test set, its predictions score as the fold models'
average does within the spread of the draws (section lgbm-refit). ``--lgbm-test-from folds``: every fold model
predicts the test set and test.parquet is their average. The out-of-fold predictions and the CV score are the
folds' either way.

Device: ``--lgbm-device cpu`` (default) or ``gpu`` (LightGBM's OpenCL GPU learner,
``device_type=gpu``; pipelines/common/device.py checks before the first fold that it can run).
"""
from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np

from pipelines import config
from pipelines.common.io import atomic_path
from pipelines.common.models import ModelSpec
from pipelines.common.options import option
from pipelines.quora.models import QuoraFeatures

log = logging.getLogger(__name__)
DESIGN_ROWS = 200_000  # rows of the design matrix built at once (see LgbmModel._design_blocks)

@dataclasses.dataclass
class LgbmOptions:
    """Options of the LightGBM model, each default once."""

    learning_rate: float = option(0.03, "shrinkage per boosting round", flag="--lgbm-learning-rate",
                                  space=("float", 0.005, 0.1, "log"))
    num_leaves: int = option(63, "leaves per tree", flag="--lgbm-num-leaves", space=("int", 15, 255))
    min_data_in_leaf: int | None = option(None, "rows per leaf at least (default: 0.1% of the train rows, at "
                                          "least 20)", flag="--lgbm-min-data-in-leaf", space=("int", 20, 400))
    feature_fraction: float = option(0.7, "columns sampled per tree", flag="--lgbm-feature-fraction",
                                     space=("float", 0.3, 1.0))
    max_bin: int = option(63, "histogram bins per feature (fewer: faster fits, coarser thresholds)",
                          flag="--lgbm-max-bin")  # not searched: a speed setting, chosen by measurement
    num_boost_round: int = option(5000, "most boosting rounds (early stopping picks)", flag="--lgbm-rounds")
    early_stopping_rounds: int = option(200, "stop after N rounds without improvement on the fold's validation "
                                        "part (0: always run --lgbm-rounds, e.g. to time a fixed amount of work)",
                                        flag="--lgbm-early-stopping")
    bow_columns: int = option(2000, "also give the trees the N most used columns of the word TF-IDF pair blocks "
                              "(0: the pair features alone)", flag="--lgbm-bow-columns")
    device: str = option("cpu", "cpu, or gpu: LightGBM's OpenCL GPU learner (needs the GPU's OpenCL driver)",
                         flag="--lgbm-device", choices=("cpu", "gpu"))
    test_from: str = option("refit", "test predictions: refit, one model fitted on every train row for the folds' mean "
                            "kept rounds x the rows ratio (the test set predicted once, not once a fold); or folds, "
                            "the fold models' average", flag="--lgbm-test-from", choices=("refit", "folds"))


_OPTION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LgbmOptions)}
# The model's parameters, in the order params.json lists them; the fixed ones are not options.
DEFAULTS = {
    "learning_rate": _OPTION_DEFAULTS["learning_rate"],
    "num_leaves": _OPTION_DEFAULTS["num_leaves"],
    "min_data_in_leaf": "auto",
    "feature_fraction": _OPTION_DEFAULTS["feature_fraction"],
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": _OPTION_DEFAULTS["max_bin"],
    "num_boost_round": _OPTION_DEFAULTS["num_boost_round"],
    "early_stopping_rounds": _OPTION_DEFAULTS["early_stopping_rounds"],
    "bow_columns": _OPTION_DEFAULTS["bow_columns"],
}


def lgb_feature_names(columns) -> list[str]:
    """LightGBM rejects some characters in feature names (JSON specials); keep names readable."""
    return [re.sub(r"[^0-9A-Za-z_]+", "_", str(c)) for c in columns]


class LgbmModel:
    name = "lgbm"

    def __init__(self, data: QuoraFeatures, seed: int = 42, device: str = _OPTION_DEFAULTS["device"],
                 test_from: str = _OPTION_DEFAULTS["test_from"], **overrides):
        from pipelines.common.device import check_lightgbm_device, lightgbm_params

        self.data = data
        self._device_params = lightgbm_params(device)  # validates --lgbm-device
        check_lightgbm_device(device)  # an unusable GPU: one line now, not a LightGBM trace in the first fold
        params = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
        if params["min_data_in_leaf"] == "auto":
            params["min_data_in_leaf"] = max(20, int(round(len(data.labels) / 1000)))
        train_cols = data.pair_feature_names("train")
        threads = max(1, min(config.n_workers(), len(data.labels) // 20_000))
        self.params = {**params, "seed": int(seed), "num_threads": threads, "features": train_cols}
        if device != "cpu":  # a GPU's trees differ in the last digits: part of the parameters (the CPU's are not
            self.params["device"] = device  # written, so runs from before this option keep their parameters)
        self.device = {"kind": device, "framework": "lightgbm"}
        self.test_from = test_from  # the CV engine's: "refit" calls fit_all once the folds are done
        self.params["test_from"] = test_from  # other test predictions, another run
        self.refit_info = None
        self._x_train = None
        self._dense = {}  # part -> float32 (n, n_features) pair features
        self._bow_keep = None

    def _bow_columns(self) -> np.ndarray:
        """The pair-block columns kept: the most used in train (decided once, reused for test)."""
        if self._bow_keep is None:
            from pipelines.quora.models.bow import pair_matrix

            pairs = pair_matrix(self.data.tfidf("word", "q1", "train"), self.data.tfidf("word", "q2", "train"),
                                with_sum=False)
            support = np.diff(pairs.tocsc().indptr)
            order = np.argsort(-support, kind="stable")[: self.params["bow_columns"]]
            self._bow_keep = np.sort(order[support[order] > 0])
        return self._bow_keep

    def _design_blocks(self, part: str):
        """The design matrix of ``part`` in blocks of DESIGN_ROWS rows: (row slice, matrix) pairs.

        Built block by block because the whole test set at Kaggle size (2.3M rows) as one sparse
        matrix, and the temporaries of stacking it, do not fit in memory at Kaggle's size; a block holds 200k rows.
        """
        import scipy.sparse as sp

        from pipelines.quora.models.bow import pair_matrix

        dense = self._matrix(part)
        keep = self._bow_columns() if self.params["bow_columns"] else None
        tfidf = (self.data.tfidf("word", "q1", part), self.data.tfidf("word", "q2", part)) if keep is not None else None
        for start in range(0, len(dense), DESIGN_ROWS):
            rows = slice(start, min(start + DESIGN_ROWS, len(dense)))
            if keep is None:
                yield rows, dense[rows]
            else:
                bow = pair_matrix(tfidf[0][rows], tfidf[1][rows], with_sum=False)[:, keep]
                yield rows, sp.hstack([sp.csr_matrix(dense[rows]), bow], format="csr", dtype=np.float32)

    def _matrix(self, part: str) -> np.ndarray:
        if part in self._dense:
            return self._dense[part]
        present = set(self.data.pair_feature_names(part))
        missing = [c for c in self.params["features"] if c not in present]
        if missing:
            from pipelines.common.log import StageError

            raise StageError(f"{self.data.dir}/pair_features_{part}.parquet lacks columns {missing[:5]}: "
                             "re-run the features stage")
        self._dense[part] = self.data.pair_feature_matrix(part, self.params["features"])
        return self._dense[part]

    @property
    def x_train(self):
        """The whole train design matrix (kept: every fold slices it)."""
        if self._x_train is None:
            blocks = [block for _, block in self._design_blocks("train")]
            if self.params["bow_columns"]:
                import scipy.sparse as sp

                self._x_train = sp.vstack(blocks, format="csr", dtype=np.float32)
            else:
                self._x_train = np.concatenate(blocks)
            self._dense.pop("train", None)  # now inside x_train
        return self._x_train

    def lgb_params(self) -> dict:
        p = self.params
        return {
            "objective": "binary", "metric": "binary_logloss", "learning_rate": p["learning_rate"],
            "num_leaves": p["num_leaves"], "min_data_in_leaf": p["min_data_in_leaf"],
            "feature_fraction": p["feature_fraction"], "bagging_fraction": p["bagging_fraction"],
            "bagging_freq": p["bagging_freq"], "lambda_l2": p["lambda_l2"], "max_bin": p["max_bin"],
            "seed": p["seed"], "deterministic": True, "force_col_wise": True,
            "num_threads": p["num_threads"], "verbosity": -1, **self._device_params,
        }

    def _train_set(self, lgb, rows: np.ndarray):
        names = lgb_feature_names(self.params["features"])
        names += [f"bow_{j}" for j in range(self.x_train.shape[1] - len(names))]
        return lgb.Dataset(self.x_train[rows], label=self.data.labels[rows], feature_name=names, free_raw_data=True)

    def fit(self, fold: int, train_idx: np.ndarray, valid_idx: np.ndarray, fold_dir: Path):
        import lightgbm as lgb

        train_set = self._train_set(lgb, train_idx)
        valid_set = lgb.Dataset(self.x_train[valid_idx], label=self.data.labels[valid_idx], reference=train_set)
        booster = lgb.train(
            self.lgb_params(), train_set, num_boost_round=self.params["num_boost_round"],
            valid_sets=[valid_set], valid_names=["valid"],
            callbacks=self._callbacks(lgb),
        )
        if self.params["early_stopping_rounds"]:
            log.info("lgbm fold %d: best iteration %d, valid log loss %.5f", fold + 1, booster.best_iteration,
                     booster.best_score["valid"]["binary_logloss"])
        else:  # best_iteration stays 0: predict and save then use every round
            log.info("lgbm fold %d: %d rounds (no early stopping)", fold + 1, booster.current_iteration())
        return booster

    def fit_all(self, train_idx: np.ndarray, fold_models: list, fold_rows: list[int], out_dir: Path):
        """One booster on every row of ``train_idx`` (the engine's refit), for the fold models' mean kept rounds
        times the rows ratio (``train_idx`` over the fold models' mean train rows); no validation part, hence no
        early stopping."""
        import lightgbm as lgb

        kept = [int(m.current_iteration()) for m in fold_models]  # load() reads the saved, kept rounds only
        rounds = max(1, int(round(np.mean(kept) * len(train_idx) / np.mean(fold_rows))))
        self.refit_info = {"rounds": rounds, "fold_rounds": kept, "rows": int(len(train_idx))}
        log.info("lgbm refit: %d rounds on %d rows (the folds kept %s)", rounds, len(train_idx), kept)
        return lgb.train(self.lgb_params(), self._train_set(lgb, train_idx), num_boost_round=rounds)

    def _callbacks(self, lgb) -> list:
        callbacks = [lgb.log_evaluation(period=500)]
        if self.params["early_stopping_rounds"]:
            callbacks.insert(0, lgb.early_stopping(self.params["early_stopping_rounds"], verbose=False))
        return callbacks

    def predict_valid(self, model, valid_idx: np.ndarray) -> np.ndarray:
        return model.predict(self.x_train[valid_idx], num_iteration=model.best_iteration)

    def predict_test(self, model) -> np.ndarray:
        return self.predict_test_folds([model])[0]

    def predict_test_folds(self, models: list) -> list[np.ndarray]:
        """Every fold model's test predictions, each design block built once for all of them (the engine's
        one pass after the folds)."""
        out = [np.empty(len(self.data.ids_test), dtype=np.float64) for _ in models]
        for rows, block in self._design_blocks("test"):
            for pred, model in zip(out, models):
                pred[rows] = model.predict(block, num_iteration=model.best_iteration,
                                           num_threads=self.params["num_threads"])
        return out

    def save(self, model, fold_dir: Path) -> None:
        with atomic_path(Path(fold_dir) / "model.txt") as tmp:
            model.save_model(str(tmp), num_iteration=model.best_iteration)

    def load(self, fold_dir: Path):
        """The fold's saved model (its kept rounds only: ``save`` wrote those)."""
        import lightgbm as lgb

        return lgb.Booster(model_file=str(Path(fold_dir) / "model.txt"))


def build(data, options: LgbmOptions, ctx) -> LgbmModel:
    fields = dataclasses.asdict(options)
    return LgbmModel(data.features, seed=ctx.seed, device=fields.pop("device"), test_from=fields.pop("test_from"),
                     **fields)


SPEC = ModelSpec(name="lgbm", options=LgbmOptions, build=build, group="LightGBM (lgbm)",
                 help="LightGBM on the pair and question-graph features and the most used TF-IDF pair columns")
