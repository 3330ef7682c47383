"""Assessment heads: what turns a segmentation (or a whole video) into scores.

* `scorers`: segment selection (the longest run of each step, jittable) and the
  per-step scorers that read a step's pooled segment features: the Key Action Scorer
  (`kas`, Li et al.) and a plain per-step MLP (`mlp`, the "segmentation network + MLP"
  rows of Table VI).
* `video`: whole-video regressors that never localise steps (average or max pooling +
  a two-hidden-layer MLP, or an LSTM): the top rows of Table VI; and the registry of
  every whole-video head (`config.model.video_pool`, `build_video_head`).
* `action_net`: ACTION-NET (Zeng et al. 2020), dynamic and static instance streams
  with context-aware (GCN) attention.
* `sa_rnn`: the spatial-attention RNN of Li et al. 2019 (skill assessment), over hand
  landmarks or a feature grid, trained with the pairwise ranking loss.
"""
