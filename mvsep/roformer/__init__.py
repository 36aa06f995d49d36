"""Mel-Band RoFormer and BS-RoFormer: the model (`model.py`), its yaml settings (`config.py`), strict loading
(`loader.py`) and the chunked demix of ../shared/docs/roformer-recipes.md (`demix.py`)."""

# The public files, under their real names: (checkpoint, yaml beside it) per architecture.
FILES: dict[str, tuple[str, str]] = {
    "mel": ("MelBandRoformer.ckpt", "config_vocals_mel_band_roformer_kj.yaml"),
    "bs": ("model_bs_roformer_ep_317_sdr_12.9755.ckpt", "model_bs_roformer_ep_317_sdr_12.9755.yaml"),
}
