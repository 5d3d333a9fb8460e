"""Ingestion: runs that bring a container's index to what its metadata files list, one module
per part; activities call these with the adapters from imagerag.config.

    contract.py     the Durable wire contract: each orchestrator's and activity's types
    sync_state.py   which runs a container still needs (one small blob per container)
    plan.py         ensure the index; read every metadata file, work out what the index holds
    image.py        one image: fetch, check, vectorize, upsert (or delete) one document
    finish.py       partition reports, deleting what no file lists, the run's report
    runs.py         run records: what the status routes read
    work.py         where the work blobs of a run live
"""
