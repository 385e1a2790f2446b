"""Measurement harness for scripts/ and reports/: what a report measures and how, apart from the predictors that
`plan`, `--fit` and the disk check use (pixtral_quant/memory/)."""
