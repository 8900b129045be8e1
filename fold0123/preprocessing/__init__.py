"""Dataset builders and input adapters: the bundled emoji era dataset (`preprocessing.emoji`), the emoji subcategory
classification benchmark in the ImageFolder layout (`preprocessing.emoji_classify`), their npm fetcher
(`preprocessing.npm`), the scorer for the era set's private answers (`preprocessing.answers`) and the adapters that
turn a competition's ImageFolder or CSV + images layout into a dataroot (`preprocessing.adapters`)."""
