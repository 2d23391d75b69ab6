"""The ClinicalBERT core shared by the stream and the training toolkit; imports neither."""
