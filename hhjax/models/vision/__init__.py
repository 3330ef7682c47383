"""Frame-level vision models from the hand-washing and hand-action literature.

* `convlstm.py`: `ConvLSTMCell` and `ConvLSTM` (Shi et al. 2015, no peepholes, gate
  order i, f, o, g; frame mask respected), `ConvLSTMClassifier` (the SUTD hand-washing
  report's ConvLSTM clip classifier).
* `cnn_lstm.py`: `SmallCNN`, `frame_cnn` (per-frame CNNs by name; the
  `hhjax.models.backbones` ones imported lazily), `CNNLSTM` (the report's CNN-LSTM,
  last valid LSTM output), `clip_frame_indices` (its every-4th-frame, 32-frame
  sampling).
* `hand_localiser.py`: `HandLocaliser` (MobileNetV2 -> sigmoid [P1, x1, y1, P2, x2,
  y2]), `localiser_loss` (Myers et al.'s eq. 1), `f1_at_threshold` /
  `localisation_counts` (F1@T_L), `labels_from_landmarks` (targets from hand-pose
  features).
* `hand_guided.py`: `crop_alignment` (eq. 2-3), `cut_out_hands`,
  `paste_hand_features`, `HandGuidedTSM` (TSM backbone + high-resolution hand stream).
"""
