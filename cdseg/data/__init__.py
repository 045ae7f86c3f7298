"""Data: dataset definitions, releases (real or generated), the prepared dataset, and the training Dataset.

Submodules are imported where used so that `import cdseg.data` stays cheap:
`definition` (a dataset's classes, labels, tasks), `source` (the registry of datasets: how each release is
read and generated), one module per dataset (`isprs` + `isprs_source`, `loveda`, `isaid`, `user` for YAML
definitions), `synth` (generated scenes), `release` (reading a release),
`prepare` (release -> prepared dataset), `prepared` (reading one), `dataset`, `transforms`.
"""
