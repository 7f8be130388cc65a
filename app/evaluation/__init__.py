"""Scoring as the FLARE21 organisers score: DSC and NSD at 1 mm per organ, time and GPU memory."""
