"""inference: offline prediction of a whole video and streaming (online) prediction frame
by frame.

* `streaming`: `StreamingModel(model, params)` runs a causal segmenter (e.g.
  `config.model.segmenter = "causal_conv_transformer"`) and the joint model's step
  scorer one frame at a time with a single jitted update (`init_state`, `step`), and
  `stream_video` feeds it a whole feature sequence; the per-frame outputs equal the
  causal model run on the whole sequence.
"""
