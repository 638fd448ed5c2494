"""The data stage: the raw M³EL release → validated records → the `datasets` builder's rows → the Hub layout.

`raw_files` reads the records files (a JSON array through `json_array`; `format_errors` holds the error they
report), `records` validates each record, `image_paths` reads images safely, `instances` turns records into rows
(`features` declares them once), `prepare` runs the builder (``loading_script/``) into Parquet plus `dataset_card`
and the benchmark's ``eval.yaml`` (`m3el_hf.benchmark`); `loading` and `show` read the result with stock
`datasets`; `synth` writes synthetic releases in the raw format.
"""
