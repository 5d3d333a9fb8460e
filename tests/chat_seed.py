"""A small chat index seeded through the ports (not ingestion): eight procedural pictures in
Azurite and their vectors and descriptions in a local index. Shared by the chat tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sample_images import picture_bytes

from imagerag import config, naming
from imagerag.ports import IndexDocument

DESCRIPTIONS = {
    0: "a red bicycle leaning against a brick wall",
    1: "a lighthouse on a rocky coast at sunset",
    2: "a bowl of green apples on a kitchen table",
    3: "a snowy mountain peak above a pine forest",
    4: "a yellow taxi waiting at a city crossing",
    5: "an old sailing boat moored in a quiet harbour",
    6: "a field of sunflowers under a blue sky",
    7: "a cup of coffee next to an open notebook",
}


@dataclass(frozen=True)
class Seeded:
    container: str
    data_dir: Path
    originals: dict[int, bytes]

    @property
    def index(self) -> str:
        return naming.index_name_for(self.container)

    def env(self) -> dict[str, str | None]:
        return {
            "IMAGES_CONTAINER": self.container,
            "LOCAL_DATA_DIR": str(self.data_dir),
            "CHAT_DEFAULT_INDEX": None,
            "AZURE_OPENAI_ENDPOINT": None,
            "OPENAI_BASE_URL": None,
            "AZURE_VISION_ENDPOINT": None,
            "AZURE_SEARCH_ENDPOINT": None,
        }


def path_of(seed: int) -> str:
    return f"pictures/{seed}.jpg"


def seed_chat_index(connection_string: str, data_dir: Path) -> Seeded:
    """Pictures in a new container, their documents in its index."""
    container = f"chat{uuid.uuid4().hex[:10]}"
    settings = config.Settings.from_env(
        {
            "AzureWebJobsStorage": connection_string,
            "IMAGES_CONTAINER": container,
            "LOCAL_DATA_DIR": str(data_dir),
        }
    )
    store = config.blob_store(settings)
    store.ensure_container(container)
    vectorizer = config.vectorizer(settings)
    index = config.image_index(settings, naming.index_name_for(container))
    index.ensure(vectorizer.model)
    originals = {seed: picture_bytes(seed) for seed in DESCRIPTIONS}
    documents = []
    for seed, data in originals.items():
        store.write(container, path_of(seed), data, content_type="image/jpeg")
        embedding = vectorizer.embed_image(data)  # the vector and thumbnail ingestion stores
        documents.append(
            IndexDocument(
                id=naming.document_id(container, path_of(seed)),
                description=DESCRIPTIONS[seed],
                image_vector=embedding.vector,
                filepath=path_of(seed),
                url=store.url(container, path_of(seed)),
                title=f"{seed}.jpg",
                source=f"{container}/metadata.json",
                model_name=vectorizer.model.name,
                model_version=vectorizer.model.version,
                content_hash="0" * 64,
                thumbnail=embedding.thumbnail,
            )
        )
    index.upsert(documents)
    return Seeded(container=container, data_dir=data_dir, originals=originals)
