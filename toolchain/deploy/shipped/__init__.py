"""Files copied verbatim into every artifact (toolchain/deploy/model_dir.py); they import no
project code. A package only so that a wheel install carries them."""
