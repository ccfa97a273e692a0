"""Environment instances in worker processes (``--num-envs``).

- ``pool.py``: the processes: starting them (with the stop signals held back), the handshake,
  commands and pipes, restarts within limits, leftover processes killed at exit;
- ``process.py``: the loop a worker process runs, dispatching to a protocol;
- ``stepping.py``: the stepping protocol, both sides: the main process's ``WorkerPoolEnv`` shows
  N instances as one ``Env``; each worker steps and writes its rows into shared blocks;
- ``acting.py``: the acting protocol, both sides: each worker runs the policy and sends rounds of
  finished segments; the main process's ``ActingWorkers`` takes them and publishes weights;
- ``shared_memory.py``: named numpy views over shared blocks, the ``Signal`` counter, packing.

Environments (``palaestra/envs``) know nothing of workers; workers build them with
``envs.sources.make_env``.
"""
