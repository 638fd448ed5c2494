"""staging: the dataset card refreshed for the repo it is pushed to."""

from __future__ import annotations

from huggingface_hub import DatasetCard

from m3el_hf.hub.staging import refresh_dataset_card


def test_refresh_dataset_card_reproduces_prepare_card_for_any_repo_id(movies_release):
    assert str(refresh_dataset_card(movies_release)) == (movies_release / "README.md").read_text(encoding="utf-8")
    card = refresh_dataset_card(movies_release, repo_id="me/m3el")
    assert 'load_dataset("me/m3el", "movies")' in card.text
    assert card.data.to_dict() == DatasetCard.load(movies_release / "README.md").data.to_dict()
