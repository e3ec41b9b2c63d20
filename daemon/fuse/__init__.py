"""The fuse stage: window features of a site joined per window, scored by rules, alerts and summaries out.

`worker` joins and delivers; `rules` scores weighted late fusion (Σαᵢgᵢ with per-term
contributions); `learned` trains and applies the learned fusion model.
"""
