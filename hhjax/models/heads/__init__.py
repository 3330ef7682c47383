"""Assessment heads: what turns a segmentation (or a whole video) into scores.

* `scorers`: segment selection (the longest run of each step, jittable) and the
  per-step scorers that read a step's pooled segment features: the Key Action Scorer
  (`kas`, Li et al.) and a plain per-step MLP (`mlp`, the "segmentation network + MLP"
  rows of Table VI).
* `video`: whole-video regressors that never localise steps (average or max pooling +
  a two-hidden-layer MLP, or an LSTM): the top rows of Table VI.
"""
