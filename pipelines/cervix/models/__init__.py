"""Cervix models, each a CV model for pipelines.common.cv.run_cv, each declaring its spec in its own file:

    bow_svm        colour histograms + colour layout + bag of visual words -> RBF SVM (bow_svm.py)
    small_cnn      compact CNN from scratch (cnn.py)
    mobilenet_v2   keras.applications backbones with a new 3-class head (pretrained or from scratch):
    ...            one registry entry each in backbones.py, one spec each in cnn.py
    cnn_features   a backbone's frozen pooled features (TTA-averaged, cached) -> LR / LightGBM head
                   (cnn_features.py; run name cnn_features_<backbone>)

Keras/TensorFlow are imported only when a network is built. The competition's registry of these specs is
in pipelines/cervix/competition.py.
"""
