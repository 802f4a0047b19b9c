"""The building side: recipes, references, fine-tuning, sampling and export (`spurbench build`).

Needs the builder stack (`pip install "spurbench[build]"`: diffusers, transformers, accelerate).
Nothing on the evaluating side (`spurbench.evaluate`) imports from here.
"""
