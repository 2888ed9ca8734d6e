"""Rasters to patches, dataset readers and writers, splits and the sample world."""
