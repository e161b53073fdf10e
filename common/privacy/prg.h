// ChaCha20 keystream (OpenSSL EVP_chacha20) addressed by byte offset: the
// pseudorandom generator behind DP noise (noise.h) and secure-aggregation
// masks (secagg.h). A stream is named by a 256-bit key and a 96-bit nonce;
// any slice of it can be produced on its own, so a worker can expand exactly
// the part of a stream that covers one key range of a parameter server.
//
// Thread-safety: reentrant (each call uses its own cipher context).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace polis::privacy {

using Key256 = std::array<uint8_t, 32>;

// Writes bytes [byte_offset, byte_offset + n) of the keystream of (key,
// nonce = nonce_lo (8 bytes LE) || nonce_hi (4 bytes LE)). A stream holds
// 2^32 blocks of 64 bytes (256 GiB); beyond that is a bug (POLIS_ENFORCE).
void ChaCha20Keystream(const Key256& key, uint64_t nonce_lo, uint32_t nonce_hi,
                       uint64_t byte_offset, uint8_t* out, size_t n);

// SHA-256 of `what` || 8 bytes of `value`: a fixed, public key derived from
// a number (tests, reproducible runs).
Key256 KeyFromNumber(const char* what, uint64_t value);

// 32 bytes from the operating system's CSPRNG (OpenSSL RAND_bytes).
StatusOr<Key256> RandomKey();

}  // namespace polis::privacy
