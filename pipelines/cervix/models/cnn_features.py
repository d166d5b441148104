"""``cnn_features``: a pretrained backbone's frozen, pooled features, averaged over TTA views, with a
logistic-regression (or LightGBM) head whose regularisation an inner CV chooses: the fast
pretrained baseline.

Per run (fold independent): every train and test image goes once through the backbone
(keras.applications, no top, global average pooling, the application's own preprocessing) in each
of the first ``tta`` D4 views (``augment.tta_views``), and the pooled features are averaged over
the views. They are cached as .npy in ``cache_dir`` under a key of everything they depend on (the
backbone, its weights file, the input size, the views, and the tensors' lock fingerprints), so a
second run, another head or a changed C grid costs no forward pass.

Per fold, on the fold's train rows only:
  * ``head=lr``: standardisation, then multinomial logistic regression; C from ``cs`` by an inner
    stratified ``inner_folds``-fold CV on log loss (sklearn LogisticRegressionCV), refitted on the
    whole train part;
  * ``head=lgbm``: LightGBM, L2 penalty ``reg_lambda`` from ``lambdas`` and the number of trees by
    an inner CV with early stopping (lightgbm.cv), refitted on the whole train part.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipelines.cervix.models.backbones import BACKBONES
from pipelines.common.io import atomic_path
from pipelines.common.models import ModelSpec
from pipelines.common.options import option

log = logging.getLogger(__name__)

N_CLASSES = 3


@dataclass
class FeatureOptions:
    """Options of cnn_features (a backbone's frozen pooled features + a regularised head)."""

    backbone: str = option("mobilenet", "backbone whose frozen features the head reads; its run is "
                           "cnn_features_<backbone> (BENCHMARKS.md, cervix-pretrained, compares them)",
                           choices=tuple(BACKBONES))
    weights: str | None = option(None, "imagenet | none | <Keras .h5 weights file> (default: ImageNet weights "
                                 "if found locally (Keras cache or $PIPELINES_WEIGHTS_DIR), else imagenet = "
                                 "download; small_cnn: none)")
    alpha: float | None = option(None, "MobileNets' width multiplier (default: the model's, e.g. 0.35 for "
                                 "mobilenet_v2)")
    tta: int = option(4, "test-time augmentation views, 1-8 (D4 symmetries)")
    head: str = option("lr", "cnn_features head: logistic regression (C by inner CV) or LightGBM (run "
                       "cnn_features_<backbone>_lgbm)", choices=("lr", "lgbm"))
    cs: tuple = option((0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1), "LR head: the Cs of its inner CV", cli=False)
    lambdas: tuple = option((1.0, 10.0, 100.0), "LightGBM head: the lambda_l2 values of its inner CV", cli=False)
    inner_folds: int = option(4, "folds of the head's inner CV", cli=False)
    batch_size: int = option(32, "images per batch of the feature extraction", cli=False)
    seed: int = option(42, "the run's seed (set by the train stage)", cli=False)

    def params(self) -> dict:
        out = asdict(self)
        out["cs"], out["lambdas"] = list(self.cs), list(self.lambdas)
        if self.head == "lr":
            out.pop("lambdas")
        else:
            out.pop("cs")
        return {"model": "cnn_features", **out}


def single_threaded_blas():
    """BLAS on one thread for the small solves of the heads: with TensorFlow's thread pools in the
    process, a multi-threaded BLAS makes a small logistic regression many times slower."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def run_name(backbone: str, head: str = "lr") -> str:
    """The model folder of cnn_features on ``backbone`` (one per backbone and head, so that they blend)."""
    return f"cnn_features_{backbone}" + ("" if head == "lr" else f"_{head}")


def pooled_features(backbone_name: str, x: np.ndarray, image_size: int, weights: str | None, alpha: float | None,
                    tta: int, batch_size: int = 32, seed: int = 42) -> np.ndarray:
    """(N, D) float32: the backbone's pooled features of ``x`` (uint8 images), mean over ``tta`` views.
    The seed fixes the random initial weights of ``weights=None`` (train and test see one network)."""
    import keras

    from pipelines.cervix.models import backbones
    from pipelines.cervix.models.augment import tta_views

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    net = backbones.build_backbone(backbone_name, image_size, weights, alpha)
    inputs = keras.Input((image_size, image_size, 3))
    model = keras.Model(inputs, net(backbones.preprocess(backbone_name, keras.ops.cast(inputs, "float32")),
                                    training=False))
    parts = []
    chunk = 256
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start:start + chunk])
        views = [model.predict(v, batch_size=batch_size, verbose=0) for v in tta_views(part, tta)]
        parts.append(np.mean(views, axis=0, dtype=np.float64).astype(np.float32))
    if not parts:
        return np.zeros((0, int(net.output_shape[-1])), np.float32)
    return np.concatenate(parts)


class CnnFeaturesModel:
    """CV model (pipelines.common.cv.CVModel): cached frozen features -> LR / LightGBM head."""

    def __init__(self, x_train: np.ndarray, y: np.ndarray, x_test: np.ndarray | None, opts: FeatureOptions,
                 image_size: int, cache_dir: Path | None = None, cache_inputs: dict | None = None):
        from pipelines.cervix.models import backbones
        from pipelines.cervix.models.cnn import resolve_weights

        entry = backbones.get(opts.backbone)
        if opts.head not in ("lr", "lgbm"):
            raise ValueError(f"unknown cnn_features head {opts.head!r}; use lr or lgbm")
        self.name = run_name(opts.backbone, opts.head)
        self.x_train, self.y, self.x_test = x_train, np.asarray(y, dtype=np.int64), x_test
        self.opts, self.image_size = opts, image_size
        self.alpha = entry.alpha if opts.alpha is None else opts.alpha
        self.weights = resolve_weights(opts.backbone, opts.weights, image_size, self.alpha)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache_inputs = cache_inputs or {}
        self.params = {**opts.params(), "alpha": self.alpha, "image_size": image_size}
        if entry.alpha is None:
            self.params.pop("alpha")
        self._cached: tuple[np.ndarray, np.ndarray | None] | None = None
        self.extract_seconds = 0.0
        self.from_cache = False

    # ------------------------------------------------------------------------------------- features

    def cache_key(self) -> str:
        weights = self.weights
        if weights not in (None, "imagenet"):
            p = Path(weights)
            weights = [p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()[:16]]
        key = {"backbone": self.opts.backbone, "alpha": self.alpha, "weights": weights, "size": self.image_size,
               "tta": self.opts.tta, "inputs": self.cache_inputs, "n_train": len(self.x_train),
               "n_test": 0 if self.x_test is None else len(self.x_test)}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def features(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._cached is not None:
            return self._cached
        paths = None
        if self.cache_dir is not None:
            stem = f"{self.opts.backbone}_{self.image_size}px_tta{self.opts.tta}_{self.cache_key()}"
            paths = (self.cache_dir / f"{stem}_train.npy", self.cache_dir / f"{stem}_test.npy")
            if all(p.is_file() for p in paths):
                try:
                    f_train, f_test = np.load(paths[0]), np.load(paths[1])
                    if len(f_train) == len(self.x_train):
                        log.info("%s: features from the cache %s", self.name, paths[0].name)
                        self.from_cache = True
                        self._cached = (f_train, f_test if self.x_test is not None else None)
                        return self._cached
                except (OSError, ValueError) as exc:  # damaged: compute again
                    log.warning("%s: cached features %s unreadable (%s): computing them again", self.name,
                                paths[0], exc)
        t0 = time.perf_counter()
        f_train = pooled_features(self.opts.backbone, self.x_train, self.image_size, self.weights, self.alpha,
                                  self.opts.tta, self.opts.batch_size, self.opts.seed)
        f_test = None
        if self.x_test is not None and len(self.x_test):
            f_test = pooled_features(self.opts.backbone, self.x_test, self.image_size, self.weights, self.alpha,
                                     self.opts.tta, self.opts.batch_size, self.opts.seed)
        self.extract_seconds = time.perf_counter() - t0
        log.info("%s: %d x %d features of %d train + %d test images (%d views) in %.0fs", self.name,
                 len(f_train), f_train.shape[1], len(f_train), 0 if f_test is None else len(f_test), self.opts.tta,
                 self.extract_seconds)
        if paths is not None:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            for path, arr in zip(paths, (f_train, f_test if f_test is not None else np.zeros((0, f_train.shape[1]),
                                                                                               np.float32))):
                with atomic_path(path, suffix=".npy") as tmp:
                    np.save(tmp, arr)
        self._cached = (f_train, f_test)
        return self._cached

    # ------------------------------------------------------------------------------------------ CV

    def fit(self, fold: int, train_idx: np.ndarray, valid_idx: np.ndarray, fold_dir: Path):
        f_train, _ = self.features()
        x, y = f_train[train_idx], self.y[train_idx]
        if self.opts.head == "lr":
            return self._fit_lr(x, y, fold)
        return self._fit_lgbm(x, y, fold)

    def _fit_lr(self, x, y, fold):
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        n_inner = self.inner_folds(y)
        inner = StratifiedKFold(n_inner, shuffle=True, random_state=self.opts.seed + fold)
        clf = LogisticRegressionCV(Cs=list(self.opts.cs), cv=inner, scoring="neg_log_loss", max_iter=3000)
        model = make_pipeline(StandardScaler(), clf)
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FutureWarning)
            model.fit(x, y)
        c = float(np.atleast_1d(clf.C_)[0])
        log.info("%s fold %d: logistic regression, C %.3g by %d-fold inner CV", self.name, fold + 1, c, n_inner)
        self.chosen = {"C": c}
        return model

    def inner_folds(self, y: np.ndarray) -> int:
        """The inner CV's folds: ``inner_folds``, fewer when a class has fewer train rows (at least 2)."""
        n = int(min(self.opts.inner_folds, np.bincount(y, minlength=N_CLASSES).min()))
        if n < 2:
            raise ValueError(f"{self.name}: a class has fewer than 2 train rows; the inner CV needs 2")
        return n

    def _fit_lgbm(self, x, y, fold):
        import lightgbm as lgb

        base = {"objective": "multiclass", "num_class": N_CLASSES, "learning_rate": 0.05, "num_leaves": 15,
                "min_data_in_leaf": 20, "feature_fraction": 0.3, "bagging_fraction": 0.8, "bagging_freq": 1,
                "verbose": -1, "seed": self.opts.seed + fold, "num_threads": 0}
        best = None
        for lam in self.opts.lambdas:
            params = {**base, "lambda_l2": lam}
            res = lgb.cv(params, lgb.Dataset(x, y), num_boost_round=1000, nfold=self.inner_folds(y),
                         stratified=True, seed=self.opts.seed + fold,
                         callbacks=[lgb.early_stopping(50, verbose=False)])
            key = next(k for k in res if k.endswith("multi_logloss-mean"))
            score, rounds = float(min(res[key])), int(np.argmin(res[key]) + 1)
            if best is None or score < best[0]:
                best = (score, lam, rounds)
        _, lam, rounds = best
        log.info("%s fold %d: LightGBM, lambda_l2 %g and %d trees by %d-fold inner CV", self.name, fold + 1, lam,
                 rounds, self.inner_folds(y))
        self.chosen = {"lambda_l2": lam, "rounds": rounds}
        return lgb.train({**base, "lambda_l2": lam}, lgb.Dataset(x, y), num_boost_round=rounds)

    def _predict(self, model, x: np.ndarray) -> np.ndarray:
        pred = model.predict_proba(x) if hasattr(model, "predict_proba") else model.predict(x)
        pred = np.asarray(pred, dtype=np.float64)
        return pred / pred.sum(axis=1, keepdims=True)

    def predict_valid(self, model, valid_idx: np.ndarray) -> np.ndarray:
        return self._predict(model, self.features()[0][valid_idx])

    def predict_test(self, model) -> np.ndarray | None:
        f_test = self.features()[1]
        if f_test is None or len(f_test) == 0:
            return None
        return self._predict(model, f_test)

    def save(self, model, fold_dir: Path) -> None:
        import joblib

        with atomic_path(Path(fold_dir) / "model.joblib", suffix=".joblib") as tmp:
            joblib.dump(model, tmp)


def build(data, options: FeatureOptions, ctx) -> CnnFeaturesModel:
    """The CV model of cnn_features: the weights resolved at the model's input size."""
    import dataclasses

    from pipelines import config
    from pipelines.cervix.models.cnn import check_tta, local_weights
    from pipelines.common.records import input_fingerprints

    check_tta(options.tta)
    tensors = data.features
    weights = options.weights or local_weights(options.backbone, tensors.image_size, options.alpha) or "imagenet"
    opts = dataclasses.replace(options, weights=weights, seed=ctx.seed)
    x_test = tensors.x_test if len(tensors.test_names) else None
    return CnnFeaturesModel(tensors.x_train, tensors.y, x_test, opts, tensors.image_size,
                            cache_dir=config.features_dir("cervix", ctx.source) / "cnn_features",
                            cache_inputs=input_fingerprints(data.inputs))


SPEC = ModelSpec(name="cnn_features", options=FeatureOptions, build=build,
                 group="cervix cnn_features (frozen pretrained features + a regularised head)",
                 help="a backbone's frozen pooled features (TTA-averaged, cached) -> LR / LightGBM head")
