"""Experiments: does grounded augmentation beat ungrounded augmentation, in-domain and across
regions? (:mod:`.transfer`), and their statistics (:mod:`.stats`)."""
