"""Ingesting one metadata file, one module per part; activities call these with the adapters
from imagerag.config.

    contract.py   the Durable wire contract: each activity's input and output types
    plan.py       read + validate the file, cut it into partitions; ensure the index
    image.py      one entry: fetch, check, vectorize, upsert one document
    finish.py     partition reports, deletion sync, the merged report
    work.py       where the work blobs of an ingestion live
"""
