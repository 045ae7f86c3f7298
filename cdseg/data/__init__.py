"""Data: the ISPRS release (real or generated), the prepared dataset, and the training Dataset.

Submodules are imported where used so that `import cdseg.data` stays cheap:
`isprs` (classes, colours, scene ids), `synth` (generated scenes), `release` (reading a release),
`prepare` (release -> prepared dataset), `prepared` (reading one), `dataset`, `transforms`.
"""
