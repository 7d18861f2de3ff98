"""descend's callbacks inside other trainers: Lightning and Hugging Face.

* :mod:`descend.integrations.lightning`: ``DescendCallback``, a
  ``lightning.pytorch.Callback`` (``pip install 'descend[lightning]'``).
* :mod:`descend.integrations.transformers`: ``DescendCallback``, a
  ``transformers.TrainerCallback`` (``pip install 'descend[transformers]'``).

Each runs descend callbacks (the monitors, :class:`~descend.train.NanGuard`,
:class:`~descend.optim.EMA`, :class:`~descend.train.EarlyStopping`,
:class:`~descend.data.samplers.LossFeedback`) at the host's matching hooks through
:class:`descend.callbacks.LoopState`, and writes ``steps.csv``, ``epochs.csv`` and
``monitors.json`` to a folder, the files ``descend doctor`` reads. Their state (the
callbacks' counters and tables, the logs so far) travels in the host's checkpoints, so
a resumed run goes on where it stopped. See docs/integrations/.

Nothing here is imported by ``import descend``; each module needs its library.
"""
