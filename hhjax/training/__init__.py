"""Training: state and optimiser (`state`), the jitted data-parallel steps (`steps`),
the loop with checkpoints, resume and logging (`loop`), Orbax checkpoints
(`checkpointing`) and metric files (`metric_writers`).

`python -m hhjax.train` is the command; `loop.train_and_evaluate(config, workdir)` is the
function behind it. Models come from `hhjax.models.joint.create_model`, data from
`hhjax.data.splits`, predictions and metrics from `hhjax.evaluation`.
"""
