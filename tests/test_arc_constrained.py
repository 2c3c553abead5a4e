"""Constrained self-edit decoding: every sample is a valid menu self-edit, and the model's choice still counts."""
import json

from seal.domains.arc.constrained import TokenTrie, canonical, menu, self_edit_trie
from seal.domains.arc.selfedit import SelfEditConfig, validate_config
from seal.engine.generation import generate, render_prompt


def test_every_menu_entry_passes_the_schema_and_texts_are_distinct():
    entries = menu()
    assert len(entries) == 16 * 2 * 6 * 5
    texts = {canonical(c) for c in entries}
    assert len(texts) == len(entries)
    for c in entries[:: 37]:
        assert isinstance(validate_config(json.loads(canonical(c))), SelfEditConfig)


def test_trie_allows_only_continuations_of_its_texts():
    trie = TokenTrie(["ab", "ac", "b"], encode=lambda t: [ord(ch) for ch in t], end_id=0)
    assert trie.allowed([]) == [ord("a"), ord("b")]
    assert trie.allowed([ord("a")]) == [ord("b"), ord("c")]
    assert trie.allowed([ord("a"), ord("c")]) == [0]
    assert trie.allowed([ord("z")]) == [0]          # off the trie: only the end


def test_constrained_sampling_from_the_real_model_gives_valid_self_edits(smol):
    prompt = render_prompt(smol, "Input:\n1 0\n0 1\n\nOutput:\n0 1\n1 0\n\n------\n\nReply with a JSON self-edit.")
    trie = self_edit_trie(smol.tokenizer)
    texts = generate(smol, [prompt] * 6, max_new_tokens=96, temperature=1.0, top_p=0.95, seed=3,
                     allowed_tokens=trie.allowed)
    menu_texts = {canonical(c) for c in menu()}
    assert all(t in menu_texts for t in texts), texts
    assert len(set(texts)) > 1                      # sampled, not a fixed answer
    free = generate(smol, [prompt] * 2, max_new_tokens=24, temperature=1.0, seed=3)
    assert not all(t in menu_texts for t in free)   # without the constraint the small model writes anything
