"""From what the live parts read to what users see: suspects, live stats, histograms, dumps."""
