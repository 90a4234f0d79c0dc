"""Media helpers: probing inputs with PyAV and making small test media with ffmpeg."""
