"""SAEs: train them on stored activations, and read a dataset's activations as SAE features.

    python -m extraction train-sae --store S --run RUN --layer 15      (extraction.sae.train)
    python -m extraction sae --store S --model M --dataset F --sae X   (extraction.sae.extract)

Both use sae-lens's own classes: training is sae-lens's `TopKTrainingSAE` and its trainer's
training step, fed from the store in a streaming loop with a shuffle buffer (what sae-lens
lacks: it trains on a model it runs itself, not on activations already stored); the result is
saved with sae-lens's `save_inference_model` and read back with its `SAE.load_from_disk`.
Extraction encodes with any sae-lens SAE: one this store trained, a folder in sae-lens's format,
or a pretrained release (online). `extraction.sae.source` finds an SAE's hook, layer and width
and checks them against the model before any weights load.
"""
