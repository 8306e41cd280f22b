"""The prediction pipeline's stages."""
