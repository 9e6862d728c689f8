"""The main job: data → (validated) CO3D-layout category → Parquet shards → surface features →
alignment of all videos into one reference frame per category → learned template features (Ray
Train) → pose estimation scored on synthetic in-the-wild images, with a report.

Run by ``catpose run`` or ``jobs/full_pipeline.py`` (locally, or on a cluster with ``ray job submit``).
With no arguments it generates the embedded synthetic categories and runs offline in minutes on 2 cores.

**One store.** Everything the run makes lives in its store ``--out`` (a folder or ``s3://bucket/prefix``,
endpoint ``--endpoint-url``): the generated data, shards, features, alignments, training runs, pose
results, manifests, the resolved ``config.yaml``, ``report.md`` and ``plots/``. Ray tasks are given
store URIs, never paths of the driver; a node's local disk is only scratch (a temporary folder that
may vanish at any time). A CO3D root given by ``--data`` may itself be an ``s3://`` prefix.

**A declared stage graph.** Each stage package declares its stages in its ``stage`` module
(``catpose/data/stage.py``, ``features``, ``align``, ``learn``, ``pose``): what it needs, the typed
artifact it provides (kept in the store as ``stages/<name>.json``), the settings that fingerprint it,
the function that runs it and its report renderers (:mod:`catpose.run.graph`). The runner
(:mod:`catpose.run.runner`) executes them in order and skips a stage whose recorded settings hash and
input artifacts match (``pipeline_manifest.json``), so a rerun against the same store — on the same or
a fresh machine — goes straight to the first unfinished stage. Downstream stages use upstream results
as recorded and never recompute them with other settings: the alignment takes the features stage's
store as it is and refuses one made with other settings than the run's (an error naming both). The
report (:mod:`catpose.run.report`) puts the stages' renderings together; the config
(:mod:`catpose.run.config`) is read from defaults, YAML and flags.

Modules: ``config`` (the main job's config), ``graph`` (what a stage is; the graph of the packages'
declarations), ``runner`` (fingerprints, skipping, running), ``report``. Import :mod:`catpose.run.runner`
for :func:`~catpose.run.runner.run` and :func:`~catpose.run.runner.main`.
"""
