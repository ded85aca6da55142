-- Endpoint secrets encrypted at rest: the id of the key each secret column is sealed with
-- (NULL: stored in clear, as written by a deployment without HERALD_SECRET_KEY). The column
-- text is then base64(nonce || XChaCha20-Poly1305 ciphertext), with the endpoint id as
-- associated data. `herald-ingest secrets reencrypt` moves every row to the current key.
ALTER TABLE endpoints
    ADD COLUMN secret_key_id          text,
    ADD COLUMN previous_secret_key_id text;
