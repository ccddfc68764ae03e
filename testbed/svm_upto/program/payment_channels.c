/* The test bed's stand-in for the payment-channels program (CHNLxYvVA28MJP9PrFuDXccuoGXAx7jBacfLEkahyGsX) that
 * x402's `upto` scheme on Solana drives (@x402/svm: ./upto/{client,server,facilitator}).
 *
 * The real program (github.com/solana-foundation/payment-channels, Rust/Pinocchio, MIT) is deployed on
 * devnet and mainnet; its binary is not published in any package registry, and building it needs Solana's
 * SBF toolchain (platform-tools) and crates.io, neither of which this machine has. This is a new
 * implementation in C of the instructions the upto flow uses, written from the program's documented
 * interface (IDL, account layout, instruction and event wire formats), compiled with Debian's clang for
 * BPF and linked by ../sbf_link.py. It runs inside the real SVM (LiteSVM) with the real System, SPL
 * Token, Associated Token Account and Ed25519 programs: every token movement is a real CPI.
 *
 * Same as the real program: instruction discriminators and data layouts (open=1, settle_and_seal=4,
 * distribute=7, reclaim=9, emit_event=228), account lists and their order, the 256-byte Channel account,
 * the channel PDA seeds, the event-authority PDA, the voucher message and its Ed25519-precompile check
 * through the Instructions sysvar, the distribution hash, the payout arithmetic (floor per bps, payee
 * remainder, payer refund of deposit - settled, treasury sweep of what is left), closing the escrow token
 * account to the rent payer, `Distributed` until open_slot + 1500, the Opened and PayoutRedirected events
 * (Anchor-style self-CPI), custom error numbers.
 *
 * Different (documented in notes/svm-upto-wire.md): payouts are one TransferChecked CPI each (the real
 * program batches two or more SPL-Token payouts into one p-token `Batch` CPI, which LiteSVM's classic SPL
 * Token lacks); token accounts are checked by content, not by re-deriving their ATA address (see
 * check_ata: compute budget); Token-2022 extensions are not screened; settle (2), top_up (3), request_close (5),
 * seal (6) and withdraw_payer (8) answer NotImplemented (custom error 0): the upto flow never sends them.
 */

typedef unsigned long u64;
typedef long i64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

/* ---- syscalls ---------------------------------------------------------------------------------- */
typedef struct { u8 x[32]; } Pubkey;
typedef struct { Pubkey *key; u64 *lamports; u64 data_len; u8 *data; Pubkey *owner; u64 rent_epoch;
                 bool is_signer; bool is_writable; bool executable; } AccountInfo;
typedef struct { Pubkey *pubkey; bool is_writable; bool is_signer; } AccountMeta;
typedef struct { const Pubkey *program_id; const AccountMeta *accounts; u64 account_len; const u8 *data;
                 u64 data_len; } Instruction;
typedef struct { const u8 *addr; u64 len; } Seed;
typedef struct { const Seed *addr; u64 len; } Seeds;
typedef struct { u64 slot; i64 epoch_start_timestamp; u64 epoch; u64 leader_schedule_epoch; i64 unix_timestamp; } Clock;

extern void sol_log_(const char *, u64);
extern void sol_log_64_(u64, u64, u64, u64, u64);
extern u64 sol_invoke_signed_c(const Instruction *, const AccountInfo *, int, const Seeds *, int);
extern u64 sol_try_find_program_address(const Seed *, u64, const Pubkey *, Pubkey *, u8 *);
extern u64 sol_create_program_address(const Seed *, u64, const Pubkey *, Pubkey *);
extern u64 sol_sha256(const Seed *, u64, u8 *);
extern u64 sol_get_clock_sysvar(void *);
extern u64 sol_curve_validate_point(u64, const u8 *, u8 *);
extern void sol_memcpy_(void *, const void *, u64);
extern void sol_memset_(void *, int, u64);
extern void sol_memcmp_(const void *, const void *, u64, int *);

/* the compiler may emit calls to these for struct copies */
void *memcpy(void *d, const void *s, u64 n) { sol_memcpy_(d, s, n); return d; }
void *memset(void *d, int c, u64 n) { sol_memset_(d, c, n); return d; }

#define LOG(s) sol_log_(s, sizeof(s) - 1)

/* ---- errors (the real program's numbers) ------------------------------------------------------- */
#define E_NOT_IMPLEMENTED (1UL << 32) /* Custom(0) travels as CUSTOM_ZERO */
#define E_MISSING_SIGNATURE 1
#define E_INVALID_CHANNEL_STATUS 2
#define E_INVALID_DISCRIMINATOR 3
#define E_UNSUPPORTED_VERSION 4
#define E_INVALID_CHANNEL_PAYER 5
#define E_INVALID_CHANNEL_PAYEE 6
#define E_INVALID_CHANNEL_MINT 7
#define E_INVALID_EVENT_AUTHORITY 8
#define E_NOT_ENOUGH_ACCOUNTS 9
#define E_INVALID_RENT_PAYER 10
#define E_CHANNEL_ACCOUNT_MISMATCH 50
#define E_MINT_ACCOUNT_MISMATCH 53
#define E_INVALID_MINT_TOKEN_PROGRAM 54
#define E_PAYER_ACCOUNT_MISMATCH 57
#define E_PAYEE_ACCOUNT_MISMATCH 60
#define E_DEPOSIT_ZERO 200
#define E_GRACE_ZERO 201
#define E_MISSING_ED25519 230
#define E_MALFORMED_ED25519 231
#define E_VOUCHER_CHANNEL 232
#define E_VOUCHER_EXPIRED 233
#define E_VOUCHER_NOT_MONOTONIC 234
#define E_VOUCHER_OVER_DEPOSIT 235
#define E_VOUCHER_SIGNER 237
#define E_VOUCHER_MAGIC 238
#define E_RECIPIENT_COUNT 260
#define E_SPLIT_CONFIG 261
#define E_DUPLICATE_RECIPIENT 263
#define E_CHANNEL_ADDRESS 2000
#define E_PAYER_PAYEE_SAME 2001
#define E_AUTHORIZED_SIGNER 2002
#define E_OPEN_SLOT_WINDOW 2003
#define E_NOT_DISTRIBUTABLE 2400
#define E_TREASURY_MISMATCH 2401
#define E_RECIPIENT_MISMATCH 2404
#define E_DISTRIBUTION_HASH 2407
#define E_NOTHING_TO_DISTRIBUTE 2408
#define E_RECIPIENT_ACCOUNT_COUNT 2409
#define E_POOL_OVERFLOW 2410
#define E_BALANCE_OVERFLOW 2411
#define E_CLOSE_TOO_EARLY 2414
#define ERR_INVALID_INSTRUCTION_DATA (3UL << 32)
#define ERR_INVALID_ACCOUNT_OWNER (23UL << 32) /* ProgramError::InvalidAccountOwner */

/* ---- constants ---------------------------------------------------------------------------------- */
static const u8 SYSTEM_PROGRAM[32] = {0};
static const u8 TOKEN_PROGRAM[32] = {6,221,246,225,215,101,161,147,217,203,225,70,206,235,121,172,28,180,133,237,95,91,55,145,58,140,245,133,126,255,0,169};
static const u8 TOKEN_2022_PROGRAM[32] = {6,221,246,225,238,117,143,222,24,66,93,188,228,108,205,218,182,26,252,77,131,185,13,39,254,189,249,40,216,161,139,252};
static const u8 ATA_PROGRAM[32] = {140,151,37,143,78,36,137,241,187,61,16,41,20,142,13,131,11,90,19,153,218,255,16,132,4,142,123,216,219,233,248,89};
static const u8 ED25519_PROGRAM[32] = {3,125,70,214,124,147,251,190,18,249,66,143,131,141,64,255,5,112,116,73,39,244,138,100,252,202,112,68,128,0,0,0};
/* The treasury owner @x402/svm names for devnet (4zTeC5mVqWLruDexgU2mV66p9t5vCA9JyiZqdGDUspap): the stack's network id is devnet's. */
static const u8 TREASURY_OWNER[32] = {59,75,74,76,62,205,126,89,214,52,174,103,229,222,187,236,10,208,111,32,77,240,19,166,149,163,55,106,87,185,141,5};
static const u8 RENT_SYSVAR[32] = {6,167,213,23,25,44,92,81,33,140,201,76,61,74,241,127,88,218,238,8,155,161,253,68,227,219,217,138,0,0,0,0};
static const u8 INSTRUCTIONS_SYSVAR[32] = {6,167,213,23,24,123,209,102,53,218,212,4,85,253,194,192,193,36,198,143,33,86,117,165,219,186,203,95,8,0,0,0};
/* The event-authority PDA of CHNLxYvVA28MJP9PrFuDXccuoGXAx7jBacfLEkahyGsX (75c2huVzDW1Eq4kD86by5392sjdJzuAT195XNgP2f2tX,
 * bump 249): constants, as in the real program (deriving it costs 7 x 1500 compute units). */
static const u8 PROGRAM_ID[32] = {167,161,251,164,235,43,9,9,147,247,210,223,214,43,137,226,184,114,7,122,99,159,215,215,71,168,233,159,99,212,21,174};
static const u8 EVENT_AUTHORITY[32] = {90,84,13,123,107,30,43,43,181,23,82,25,201,163,240,96,16,146,65,202,140,79,23,12,193,202,45,72,238,234,249,208};
#define EVENT_AUTHORITY_BUMP 249
static const char SEED_CHANNEL[] = "channel";
static const char SEED_EVENT_AUTHORITY[] = "event_authority";
static const u8 EVENT_IX_TAG_LE[8] = {0xe4,0x45,0xa5,0x2e,0x51,0xcb,0x9a,0x1d};
static const u8 OPENED_DISC[8] = {0xa6,0xac,0x61,0x09,0x4d,0x4c,0xbd,0x6d};
static const u8 PAYOUT_REDIRECTED_DISC[8] = {0xd1,0x16,0xb9,0xd7,0x54,0xa7,0x54,0x50};

#define OPEN_SLOT_WINDOW 1500UL
#define BPS_DENOMINATOR 10000UL
#define MAX_RECIPIENTS 32
#define CHANNEL_LEN 256
#define MINT_LEN 82
#define TOKEN_ACCOUNT_LEN 165
#define STATUS_OPEN 0
#define STATUS_SEALED 1
#define STATUS_CLOSING 2
#define STATUS_DISTRIBUTED 3
#define VOUCHER_LEN 50
#define ED25519_IX_LEN (16 + 32 + 64 + VOUCHER_LEN)
#define MAX_PERMITTED_DATA_INCREASE 10240

/* Channel account offsets (256 bytes, repr(C), alignment 1) */
#define CH_DISC 0
#define CH_VERSION 1
#define CH_BUMP 2
#define CH_STATUS 3
#define CH_SALT 4
#define CH_DEPOSIT 12
#define CH_SETTLED 20
#define CH_PAYOUT_WM 28
#define CH_CLOSURE_STARTED 36
#define CH_PAYER_WITHDRAWN 44
#define CH_GRACE 52
#define CH_DIST_HASH 56
#define CH_PAYER 88
#define CH_PAYEE 120
#define CH_AUTH_SIGNER 152
#define CH_MINT 184
#define CH_RENT_PAYER 216
#define CH_OPEN_SLOT 248

/* ---- little helpers ----------------------------------------------------------------------------- */
static u64 rd64(const u8 *p) { u64 v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static u32 rd32(const u8 *p) { return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24); }
static u16 rd16(const u8 *p) { return (u16)(p[0] | (p[1] << 8)); }
static void wr64(u8 *p, u64 v) { for (int i = 0; i < 8; i++) { p[i] = (u8)v; v >>= 8; } }
static void wr32(u8 *p, u32 v) { for (int i = 0; i < 4; i++) { p[i] = (u8)v; v >>= 8; } }
static bool eq32(const void *a, const void *b) { int r = 1; sol_memcmp_(a, b, 32, &r); return r == 0; }
static void cp(void *d, const void *s, u64 n) { sol_memcpy_(d, s, n); }

/* A bump allocator over the 32 KiB heap the runtime gives every program. */
static u8 *heap_top(void) { return (u8 *)0x300000000UL; }
typedef struct { u8 *next; } Heap;
static void *alloc(Heap *h, u64 n) { u8 *p = h->next; h->next += (n + 7) & ~7UL; sol_memset_(p, 0, n); return p; }

/* floor(a * bps / 10000) without 128-bit arithmetic (bps <= 10000) */
static u64 mul_bps(u64 a, u64 bps) { return (a / BPS_DENOMINATOR) * bps + ((a % BPS_DENOMINATOR) * bps) / BPS_DENOMINATOR; }

/* ---- input ---------------------------------------------------------------------------------------- */
typedef struct {
    AccountInfo *acc; u64 n;
    const u8 *data; u64 data_len;
    const Pubkey *program_id;
    Heap heap;
} Ctx;

static __attribute__((noinline)) void deserialize(const u8 *input, Ctx *c) {
    c->heap.next = heap_top();
    u64 n = rd64(input); input += 8;
    c->acc = alloc(&c->heap, sizeof(AccountInfo) * (n ? n : 1));
    c->n = n;
    for (u64 i = 0; i < n; i++) {
        u8 dup = *input++;
        AccountInfo *a = &c->acc[i];
        if (dup == 0xff) {
            a->is_signer = *input++;
            a->is_writable = *input++;
            a->executable = *input++;
            input += 4;
            a->key = (Pubkey *)input; input += 32;
            a->owner = (Pubkey *)input; input += 32;
            a->lamports = (u64 *)input; input += 8;
            a->data_len = rd64(input); input += 8;
            a->data = (u8 *)input; input += a->data_len + MAX_PERMITTED_DATA_INCREASE;
            input = (const u8 *)(((u64)input + 7) & ~7UL);
            a->rent_epoch = rd64(input); input += 8;
        } else {
            *a = c->acc[dup];
            input += 7;
        }
    }
    c->data_len = rd64(input); input += 8;
    c->data = input; input += c->data_len;
    c->program_id = (const Pubkey *)input;
}

/* The length the runtime keeps for an account's data (updated by CPIs that resize it). */
static u64 data_len(const AccountInfo *a) { return rd64(a->data - 8); }

/* ---- CPI helpers ---------------------------------------------------------------------------------- */
static u64 invoke(Ctx *c, const u8 *program, AccountMeta *metas, u64 n, const u8 *data, u64 len,
                  const Seeds *signers, int n_signers) {
    Instruction ix = { (const Pubkey *)program, metas, n, data, len };
    return sol_invoke_signed_c(&ix, c->acc, (int)c->n, signers, n_signers);
}

static void meta(AccountMeta *m, const void *key, bool writable, bool signer) {
    m->pubkey = (Pubkey *)key; m->is_writable = writable; m->is_signer = signer;
}

static u64 find_pda(const Seed *seeds, u64 n, const void *program, Pubkey *out, u8 *bump) {
    return sol_try_find_program_address(seeds, n, (const Pubkey *)program, out, bump);
}

static void ata_of(const void *owner, const void *token_program, const void *mint, Pubkey *out) {
    Seed s[3] = { { owner, 32 }, { token_program, 32 }, { mint, 32 } };
    u8 bump;
    find_pda(s, 3, ATA_PROGRAM, out, &bump);
}

static bool is_token_program(const void *key) { return eq32(key, TOKEN_PROGRAM) || eq32(key, TOKEN_2022_PROGRAM); }

/* decimals of a mint owned by `token_program`, or -1 */
static int mint_decimals(const AccountInfo *mint, const void *token_program) {
    if (!eq32(mint->owner, token_program)) return -1;
    u64 len = data_len(mint);
    if (len < MINT_LEN || mint->data[45] != 1) return -1;
    return mint->data[44];
}

/* 0: a token account of `mint` owned by `owner` (initialized, if need_init); else an error class.
 * The canonical-ATA address is re-derived only with CHECK_ADDRESS: each derivation costs 1,500 compute
 * units per bump tried, and the SDK's compute budgets (90,000 for open, 100,000 for the claim) leave no
 * room for the 2-5 derivations per instruction the real (much leaner) program affords. The accounts are
 * then checked by content; the ATA program (open) and the token program (transfers) check the rest. */
#define ATA_OK 0
#define ATA_ADDRESS 1
#define ATA_NOT_INITIALIZED 2
#define ATA_MALFORMED 3
#define ATA_OWNER 4
#define NEED_INIT 1
#define CHECK_ADDRESS 2
static __attribute__((noinline)) int check_ata(const AccountInfo *acct, const void *owner, const void *token_program, const void *mint, int flags) {
    if (flags & CHECK_ADDRESS) {
        Pubkey want;
        ata_of(owner, token_program, mint, &want);
        if (!eq32(acct->key, &want)) return ATA_ADDRESS;
    }
    if (!(flags & NEED_INIT)) return ATA_OK;
    if (!eq32(acct->owner, token_program) || data_len(acct) == 0) return ATA_NOT_INITIALIZED;
    if (data_len(acct) < TOKEN_ACCOUNT_LEN || !eq32(acct->data, mint)) return ATA_MALFORMED;
    if (acct->data[108] == 0) return ATA_NOT_INITIALIZED;
    if (!eq32(acct->data + 32, owner)) return ATA_OWNER;
    return ATA_OK;
}

/* sha256(u32 count || (recipient || bps LE) * count): the preimage bytes as sent */
static void distribution_hash(const u8 *preimage, u64 len, u8 *out) {
    Seed s[1] = { { preimage, len } };
    sol_sha256(s, 1, out);
}

/* validates `count || entries` of exactly `len` bytes; returns the count or -error */
static __attribute__((noinline)) i64 load_recipients(const u8 *p, u64 len) {
    if (len < 4) return -(i64)ERR_INVALID_INSTRUCTION_DATA;
    u32 count = rd32(p);
    if (count > MAX_RECIPIENTS) return -E_RECIPIENT_COUNT;
    if (len != 4 + (u64)count * 34) return -(i64)ERR_INVALID_INSTRUCTION_DATA;
    u64 sum = 0;
    for (u32 i = 0; i < count; i++) {
        const u8 *e = p + 4 + i * 34;
        u16 bps = rd16(e + 32);
        if (bps == 0) return -E_SPLIT_CONFIG;
        sum += bps;
        for (u32 j = 0; j < i; j++)
            if (eq32(p + 4 + j * 34, e)) return -E_DUPLICATE_RECIPIENT;
    }
    if (sum > BPS_DENOMINATOR) return -E_SPLIT_CONFIG;
    return count;
}

/* the event authority PDA of this program: the constant for the canonical program id, else derived */
static __attribute__((noinline)) void event_authority(Ctx *c, Pubkey *pda, u8 *bump) {
    if (eq32(c->program_id, PROGRAM_ID)) { cp(pda, EVENT_AUTHORITY, 32); *bump = EVENT_AUTHORITY_BUMP; return; }
    Seed s1[1] = { { (const u8 *)SEED_EVENT_AUTHORITY, sizeof(SEED_EVENT_AUTHORITY) - 1 } };
    find_pda(s1, 1, c->program_id, pda, bump);
}

/* Anchor-style event: a self-CPI (discriminator 228) signed by the event-authority PDA. */
static __attribute__((noinline)) u64 emit_event(Ctx *c, const AccountInfo *event_authority_account, const u8 *payload, u64 len) {
    Pubkey pda; u8 bump;
    event_authority(c, &pda, &bump);
    if (!eq32(event_authority_account->key, &pda)) return E_INVALID_EVENT_AUTHORITY;
    Seed s2[2] = { { (const u8 *)SEED_EVENT_AUTHORITY, sizeof(SEED_EVENT_AUTHORITY) - 1 }, { &bump, 1 } };
    Seeds signer = { s2, 2 };
    AccountMeta m[1];
    meta(m, event_authority_account->key, false, true);
    return invoke(c, (const u8 *)c->program_id, m, 1, payload, len, &signer, 1);
}

typedef struct { const AccountInfo *token_program, *from, *mint, *to, *authority; u64 amount; u8 decimals;
                 const Seeds *signer; } Xfer;
static __attribute__((noinline)) u64 transfer_checked(Ctx *c, const Xfer *x) {
    u8 data[10];
    data[0] = 12; wr64(data + 1, x->amount); data[9] = x->decimals;
    AccountMeta m[4];
    meta(m + 0, x->from->key, true, false);
    meta(m + 1, x->mint->key, false, false);
    meta(m + 2, x->to->key, true, false);
    meta(m + 3, x->authority->key, false, true);
    return invoke(c, (const u8 *)x->token_program->key, m, 4, data, 10, x->signer, x->signer ? 1 : 0);
}

/* the channel PDA's signer seeds (8 seeds, bump last) from a Channel account's bytes */
typedef struct { Seed s[8]; u8 bump; Seeds seeds; } ChannelSigner;
static void channel_signer(const u8 *ch, ChannelSigner *out) {
    out->bump = ch[CH_BUMP];
    out->s[0].addr = (const u8 *)SEED_CHANNEL; out->s[0].len = sizeof(SEED_CHANNEL) - 1;
    out->s[1].addr = ch + CH_PAYER; out->s[1].len = 32;
    out->s[2].addr = ch + CH_PAYEE; out->s[2].len = 32;
    out->s[3].addr = ch + CH_MINT; out->s[3].len = 32;
    out->s[4].addr = ch + CH_AUTH_SIGNER; out->s[4].len = 32;
    out->s[5].addr = ch + CH_SALT; out->s[5].len = 8;
    out->s[6].addr = ch + CH_OPEN_SLOT; out->s[6].len = 8;
    out->s[7].addr = &out->bump; out->s[7].len = 1;
    out->seeds.addr = out->s; out->seeds.len = 8;
}

static u64 load_channel(Ctx *c, const AccountInfo *a, u8 **out) {
    if (!eq32(a->owner, c->program_id)) return ERR_INVALID_ACCOUNT_OWNER;
    if (data_len(a) < CHANNEL_LEN) return ERR_INVALID_ACCOUNT_OWNER;
    if (a->data[CH_DISC] != 1) return E_INVALID_DISCRIMINATOR;
    if (a->data[CH_VERSION] != 1) return E_UNSUPPORTED_VERSION;
    *out = a->data;
    return 0;
}

/* ---- open (1) ------------------------------------------------------------------------------------ */
/* data: salt u64 | deposit u64 | grace_period u32 | open_slot u64 | count u32 | entries (recipient, bps u16) */
static __attribute__((noinline)) u64 process_open(Ctx *c) {
    if (c->n < 14) return E_NOT_ENOUGH_ACCOUNTS;
    AccountInfo *payer = &c->acc[0], *rent_payer = &c->acc[1], *payee = &c->acc[2], *mint = &c->acc[3],
                *auth = &c->acc[4], *channel = &c->acc[5], *payer_ta = &c->acc[6], *channel_ta = &c->acc[7],
                *token_program = &c->acc[8], *system_program = &c->acc[9], *rent = &c->acc[10],
                *event_authority = &c->acc[12];
    const u8 *d = c->data + 1;
    u64 len = c->data_len - 1;
    if (len < 28) return ERR_INVALID_INSTRUCTION_DATA;
    const u8 *salt = d, *open_slot_b = d + 20;
    u64 deposit = rd64(d + 8);
    u32 grace = rd32(d + 16);
    u64 open_slot = rd64(open_slot_b);
    i64 count = load_recipients(d + 28, len - 28);
    if (count < 0) return (u64)(-count);

    if (!payer->is_signer || !rent_payer->is_signer) return E_MISSING_SIGNATURE;
    if (eq32(payer->key, payee->key)) return E_PAYER_PAYEE_SAME;
    if (deposit == 0) return E_DEPOSIT_ZERO;
    if (grace < 1) return E_GRACE_ZERO;
    u8 invalid = 1;
    if (sol_curve_validate_point(0, (const u8 *)auth->key, &invalid) != 0) return E_AUTHORIZED_SIGNER;

    struct { Clock clock; Seed seeds[8]; Pubkey channel_address; u8 bump; u8 dist_hash[32]; AccountMeta m[6];
             u8 sys[12]; u8 assign[36]; u8 ev[56]; Seeds signer; } *w = alloc(&c->heap, sizeof(*w));
    sol_get_clock_sysvar(&w->clock);
    if (open_slot > w->clock.slot || w->clock.slot - open_slot > OPEN_SLOT_WINDOW) return E_OPEN_SLOT_WINDOW;

    Seed *seeds = w->seeds;
    seeds[0].addr = (const u8 *)SEED_CHANNEL; seeds[0].len = sizeof(SEED_CHANNEL) - 1;
    seeds[1].addr = (const u8 *)payer->key; seeds[1].len = 32;
    seeds[2].addr = (const u8 *)payee->key; seeds[2].len = 32;
    seeds[3].addr = (const u8 *)mint->key; seeds[3].len = 32;
    seeds[4].addr = (const u8 *)auth->key; seeds[4].len = 32;
    seeds[5].addr = salt; seeds[5].len = 8;
    seeds[6].addr = open_slot_b; seeds[6].len = 8;
    seeds[7].addr = &w->bump; seeds[7].len = 1;
    if (find_pda(seeds, 7, c->program_id, &w->channel_address, &w->bump) != 0) return E_CHANNEL_ADDRESS;
    Pubkey *channel_address = &w->channel_address;
    u8 bump = w->bump;
    for (i64 i = 0; i < count; i++)
        if (eq32(d + 28 + 4 + i * 34, channel_address)) return E_SPLIT_CONFIG;
    u8 *dist_hash = w->dist_hash;
    distribution_hash(d + 28, len - 28, dist_hash);
    if (!eq32(channel->key, channel_address)) return E_CHANNEL_ADDRESS;

    if (!is_token_program(token_program->key)) return E_INVALID_MINT_TOKEN_PROGRAM;
    int decimals = mint_decimals(mint, token_program->key);
    if (decimals < 0) return E_MINT_ACCOUNT_MISMATCH;
    /* the escrow's address is checked by the ATA program's CreateIdempotent below */
    if (check_ata(payer_ta, payer->key, token_program->key, mint->key, NEED_INIT) != ATA_OK) return E_PAYER_ACCOUNT_MISMATCH;

    /* rent: top up the shortfall, then signed Allocate + Assign (not CreateAccount: prefund-tolerant) */
    if (!eq32(rent->key, RENT_SYSVAR) || data_len(rent) < 17) return ERR_INVALID_INSTRUCTION_DATA;
    u64 lamports_per_byte_year = rd64(rent->data);
    u64 threshold_bits = rd64(rent->data + 8);
    if (threshold_bits != 0x4000000000000000UL) return ERR_INVALID_INSTRUCTION_DATA; /* 2.0 years */
    u64 min_rent = (128 + CHANNEL_LEN) * lamports_per_byte_year * 2;
    u64 have = *channel->lamports;
    u8 *sys = w->sys;
    AccountMeta *m = w->m;
    w->signer.addr = seeds; w->signer.len = 8;
    Seeds *signer = &w->signer;
    if (have < min_rent) {
        wr32(sys, 2); wr64(sys + 4, min_rent - have); /* System Transfer */
        meta(m + 0, rent_payer->key, true, true);
        meta(m + 1, channel->key, true, false);
        u64 r = invoke(c, SYSTEM_PROGRAM, m, 2, sys, 12, NULL, 0);
        if (r) return r;
    }
    wr32(sys, 8); wr64(sys + 4, CHANNEL_LEN); /* System Allocate */
    meta(m + 0, channel->key, true, true);
    u64 r = invoke(c, SYSTEM_PROGRAM, m, 1, sys, 12, signer, 1);
    if (r) return r;
    u8 *assign = w->assign;
    wr32(assign, 1); cp(assign + 4, c->program_id, 32); /* System Assign */
    r = invoke(c, SYSTEM_PROGRAM, m, 1, assign, 36, signer, 1);
    if (r) return r;

    /* the escrow: the channel PDA's associated token account (CreateIdempotent) */
    u8 create_idempotent = 1;
    meta(m + 0, rent_payer->key, true, true);
    meta(m + 1, channel_ta->key, true, false);
    meta(m + 2, channel->key, false, false);
    meta(m + 3, mint->key, false, false);
    meta(m + 4, system_program->key, false, false);
    meta(m + 5, token_program->key, false, false);
    r = invoke(c, ATA_PROGRAM, m, 6, &create_idempotent, 1, NULL, 0);
    if (r) return r;

    /* the deposit: payer -> escrow, the payer's own signature */
    Xfer x = { token_program, payer_ta, mint, channel_ta, payer, deposit, (u8)decimals, NULL };
    r = transfer_checked(c, &x);
    if (r) return r;

    u8 *ch = channel->data;
    sol_memset_(ch, 0, CHANNEL_LEN);
    ch[CH_DISC] = 1; ch[CH_VERSION] = 1; ch[CH_BUMP] = bump; ch[CH_STATUS] = STATUS_OPEN;
    cp(ch + CH_SALT, salt, 8);
    wr64(ch + CH_DEPOSIT, deposit);
    wr32(ch + CH_GRACE, grace);
    cp(ch + CH_DIST_HASH, dist_hash, 32);
    cp(ch + CH_PAYER, payer->key, 32);
    cp(ch + CH_PAYEE, payee->key, 32);
    cp(ch + CH_AUTH_SIGNER, auth->key, 32);
    cp(ch + CH_MINT, mint->key, 32);
    cp(ch + CH_RENT_PAYER, rent_payer->key, 32);
    wr64(ch + CH_OPEN_SLOT, open_slot);

    u8 *ev = w->ev; /* tag | Opened disc | channel | open_slot */
    cp(ev, EVENT_IX_TAG_LE, 8); cp(ev + 8, OPENED_DISC, 8); cp(ev + 16, channel->key, 32); wr64(ev + 48, open_slot);
    return emit_event(c, event_authority, ev, 56);
}

/* ---- settle_and_seal (4) ------------------------------------------------------------------------- */
static __attribute__((noinline)) u64 verify_voucher(Ctx *c, const AccountInfo *channel, const u8 *ch, const AccountInfo *ixs, i64 now, u64 *out) {
    if (!eq32(ixs->key, INSTRUCTIONS_SYSVAR)) return E_MISSING_ED25519;
    const u8 *s = ixs->data;
    u64 len = data_len(ixs);
    if (len < 4) return E_MISSING_ED25519;
    u16 num = rd16(s);
    u16 current = rd16(s + len - 2);
    if (current == 0 || current - 1 >= num) return E_MISSING_ED25519;
    const u8 *ix = s + rd16(s + 2 + 2 * (current - 1));
    u16 n_accounts = rd16(ix);
    const u8 *program = ix + 2 + 33 * n_accounts;
    if (!eq32(program, ED25519_PROGRAM)) return E_MISSING_ED25519;
    u16 ix_len = rd16(program + 32);
    const u8 *data = program + 34;
    /* the canonical single-signature layout, everything in this instruction */
    if (ix_len != ED25519_IX_LEN || data[0] != 1 || data[1] != 0) return E_MALFORMED_ED25519;
    if (rd16(data + 2) != 48 || rd16(data + 4) != 0xffff || rd16(data + 6) != 16 || rd16(data + 8) != 0xffff
        || rd16(data + 10) != 112 || rd16(data + 12) != VOUCHER_LEN || rd16(data + 14) != 0xffff)
        return E_MALFORMED_ED25519;
    const u8 *pubkey = data + 16, *msg = data + 112;
    if (msg[0] != 0x56 || msg[1] != 0x01) return E_VOUCHER_MAGIC;
    if (!eq32(msg + 2, channel->key)) return E_VOUCHER_CHANNEL;
    i64 expires_at = (i64)rd64(msg + 42);
    if (expires_at != 0 && now >= expires_at) return E_VOUCHER_EXPIRED;
    u64 cumulative = rd64(msg + 34);
    if (cumulative > rd64(ch + CH_DEPOSIT)) return E_VOUCHER_OVER_DEPOSIT;
    if (rd64(ch + CH_SETTLED) >= cumulative) return E_VOUCHER_NOT_MONOTONIC;
    if (!eq32(pubkey, ch + CH_AUTH_SIGNER)) return E_VOUCHER_SIGNER;
    *out = cumulative;
    return 0;
}

static __attribute__((noinline)) u64 process_settle_and_seal(Ctx *c) {
    if (c->n < 3) return E_NOT_ENOUGH_ACCOUNTS;
    if (c->data_len < 2) return ERR_INVALID_INSTRUCTION_DATA;
    AccountInfo *payee = &c->acc[0], *channel = &c->acc[1], *ixs = &c->acc[2];
    if (!payee->is_signer) return E_MISSING_SIGNATURE;
    Clock clock;
    sol_get_clock_sysvar(&clock);
    u8 *ch;
    u64 r = load_channel(c, channel, &ch);
    if (r) return r;
    u8 status = ch[CH_STATUS];
    if (status == STATUS_CLOSING) {
        i64 deadline = (i64)rd64(ch + CH_CLOSURE_STARTED) + (i64)rd32(ch + CH_GRACE);
        if (clock.unix_timestamp >= deadline) return E_INVALID_CHANNEL_STATUS;
    } else if (status != STATUS_OPEN) {
        return E_INVALID_CHANNEL_STATUS;
    }
    if (!eq32(payee->key, ch + CH_PAYEE)) return E_INVALID_CHANNEL_PAYEE;
    if (c->data[1] != 0) {
        u64 watermark;
        r = verify_voucher(c, channel, ch, ixs, clock.unix_timestamp, &watermark);
        if (r) return r;
        wr64(ch + CH_SETTLED, watermark);
    }
    ch[CH_STATUS] = STATUS_SEALED;
    wr64(ch + CH_CLOSURE_STARTED, 0);
    return 0;
}

/* ---- distribute (7) ------------------------------------------------------------------------------ */
typedef struct { const AccountInfo *to; u64 amount; } Payout;

/* where a payout goes: its own token account, or (with a PayoutRedirected event) the treasury's */
typedef struct { const AccountInfo *treasury, *event_authority, *channel, *token_program, *mint; } PayCtx;
typedef struct { u8 beneficiary; const AccountInfo *account; const u8 *owner; u64 amount; const AccountInfo *out; } Dest;
static __attribute__((noinline)) u64 payout_destination(Ctx *c, const PayCtx *p, Dest *d) {
    static const u64 mismatch[3] = { E_RECIPIENT_MISMATCH, E_PAYEE_ACCOUNT_MISMATCH, E_PAYER_ACCOUNT_MISMATCH };
    int check = check_ata(d->account, d->owner, p->token_program->key, p->mint->key, d->amount != 0 ? NEED_INIT : 0);
    if (check == ATA_OK) { d->out = d->account; return 0; }
    if (check == ATA_ADDRESS) return mismatch[d->beneficiary];
    u8 reason = check == ATA_NOT_INITIALIZED ? 2 : check == ATA_MALFORMED ? 1 : 3;
    u8 *ev = alloc(&c->heap, 16 + 32 + 32 + 8 + 2);
    cp(ev, EVENT_IX_TAG_LE, 8); cp(ev + 8, PAYOUT_REDIRECTED_DISC, 8);
    cp(ev + 16, p->channel->key, 32); cp(ev + 48, d->owner, 32); wr64(ev + 80, d->amount);
    ev[88] = d->beneficiary; ev[89] = reason;
    u64 r = emit_event(c, p->event_authority, ev, 90);
    if (r) return r;
    d->out = p->treasury;
    return 0;
}

static __attribute__((noinline)) u64 process_distribute(Ctx *c) {
    if (c->n < 11) return E_NOT_ENOUGH_ACCOUNTS;
    AccountInfo *channel = &c->acc[0], *payer = &c->acc[1], *rent_payer = &c->acc[2], *channel_ta = &c->acc[3],
                *payer_ta = &c->acc[4], *payee_ta = &c->acc[5], *treasury_ta = &c->acc[6], *mint = &c->acc[7],
                *token_program = &c->acc[8], *event_authority = &c->acc[9];
    AccountInfo *recipient_tas = &c->acc[11];
    u64 n_recipient_tas = c->n - 11;
    const u8 *d = c->data + 1;
    u64 len = c->data_len - 1;
    i64 count = load_recipients(d, len);
    if (count < 0) return (u64)(-count);

    u8 *ch;
    u64 r = load_channel(c, channel, &ch);
    if (r) return r;
    u8 status = ch[CH_STATUS];
    if (status != STATUS_OPEN && status != STATUS_SEALED) return E_NOT_DISTRIBUTABLE;
    if (!eq32(payer->key, ch + CH_PAYER)) return E_INVALID_CHANNEL_PAYER;
    if (!eq32(mint->key, ch + CH_MINT)) return E_INVALID_CHANNEL_MINT;
    if (!eq32(rent_payer->key, ch + CH_RENT_PAYER)) return E_INVALID_RENT_PAYER;
    if (!is_token_program(token_program->key)) return E_INVALID_MINT_TOKEN_PROGRAM;
    int decimals = mint_decimals(mint, token_program->key);
    if (decimals < 0) return E_MINT_ACCOUNT_MISMATCH;
    if (check_ata(channel_ta, channel->key, token_program->key, mint->key, NEED_INIT) != ATA_OK) return E_CHANNEL_ACCOUNT_MISMATCH;
    if (check_ata(treasury_ta, TREASURY_OWNER, token_program->key, mint->key, NEED_INIT) != ATA_OK) return E_TREASURY_MISMATCH;

    u8 digest[32];
    distribution_hash(d, len, digest);
    if (!eq32(digest, ch + CH_DIST_HASH)) return E_DISTRIBUTION_HASH;
    if (n_recipient_tas != (u64)count) return E_RECIPIENT_ACCOUNT_COUNT;

    u64 settled = rd64(ch + CH_SETTLED), watermark = rd64(ch + CH_PAYOUT_WM);
    if (watermark > settled) return E_POOL_OVERFLOW;
    if (status == STATUS_OPEN && watermark == settled) return E_NOTHING_TO_DISTRIBUTE;
    u64 deposit = rd64(ch + CH_DEPOSIT);
    bool sealed = status == STATUS_SEALED;
    ChannelSigner *signer = alloc(&c->heap, sizeof(ChannelSigner));
    channel_signer(ch, signer);

    Payout *pay = alloc(&c->heap, sizeof(Payout) * (MAX_RECIPIENTS + 3));
    PayCtx *pc = alloc(&c->heap, sizeof(PayCtx));
    pc->treasury = treasury_ta; pc->event_authority = event_authority; pc->channel = channel;
    pc->token_program = token_program; pc->mint = mint;
    u64 n_pay = 0, outflow = 0, bps_sum = 0;
    for (i64 i = 0; i < count; i++) {
        const u8 *e = d + 4 + i * 34;
        u64 bps = rd16(e + 32);
        bps_sum += bps;
        u64 amount = mul_bps(settled, bps) - mul_bps(watermark, bps);
        Dest dst = { 0, &recipient_tas[i], e, amount, NULL };
        r = payout_destination(c, pc, &dst);
        if (r) return r;
        if (amount) { pay[n_pay].to = dst.out; pay[n_pay].amount = amount; n_pay++; outflow += amount; }
    }
    u64 payee_bps = BPS_DENOMINATOR - bps_sum;
    u64 payee_share = mul_bps(settled, payee_bps) - mul_bps(watermark, payee_bps);
    Dest dst = { 1, payee_ta, ch + CH_PAYEE, payee_share, NULL };
    r = payout_destination(c, pc, &dst);
    if (r) return r;
    if (payee_share) { pay[n_pay].to = dst.out; pay[n_pay].amount = payee_share; n_pay++; outflow += payee_share; }

    if (sealed) {
        if (rd64(ch + CH_PAYER_WITHDRAWN) == 0 && deposit > settled) {
            u64 refund = deposit - settled;
            Dest back = { 2, payer_ta, ch + CH_PAYER, refund, NULL };
            r = payout_destination(c, pc, &back);
            if (r) return r;
            pay[n_pay].to = back.out; pay[n_pay].amount = refund; n_pay++; outflow += refund;
        }
        u64 escrow = rd64(channel_ta->data + 64);
        if (escrow < outflow) return E_BALANCE_OVERFLOW;
        if (escrow > outflow) { pay[n_pay].to = treasury_ta; pay[n_pay].amount = escrow - outflow; n_pay++; }
    }

    for (u64 i = 0; i < n_pay; i++) {
        Xfer x = { token_program, channel_ta, mint, pay[i].to, channel, pay[i].amount, (u8)decimals, &signer->seeds };
        r = transfer_checked(c, &x);
        if (r) return r;
    }

    if (sealed) {
        u8 close = 9; /* CloseAccount: the escrow's rent goes to the rent payer */
        AccountMeta m[3];
        meta(m + 0, channel_ta->key, true, false);
        meta(m + 1, rent_payer->key, true, false);
        meta(m + 2, channel->key, false, true);
        r = invoke(c, (const u8 *)token_program->key, m, 3, &close, 1, &signer->seeds, 1);
        if (r) return r;
        Clock clock;
        sol_get_clock_sysvar(&clock);
        if (clock.slot > rd64(ch + CH_OPEN_SLOT) + OPEN_SLOT_WINDOW) {
            *rent_payer->lamports += *channel->lamports; /* deallocate: the account is gone after this */
            *channel->lamports = 0;
            sol_memset_(channel->data, 0, CHANNEL_LEN);
        } else {
            ch[CH_STATUS] = STATUS_DISTRIBUTED;
        }
    } else {
        wr64(ch + CH_PAYOUT_WM, settled);
    }
    return 0;
}

/* ---- reclaim (9) --------------------------------------------------------------------------------- */
static __attribute__((noinline)) u64 process_reclaim(Ctx *c) {
    if (c->n < 2) return E_NOT_ENOUGH_ACCOUNTS;
    AccountInfo *channel = &c->acc[0], *rent_payer = &c->acc[1];
    u8 *ch;
    u64 r = load_channel(c, channel, &ch);
    if (r) return r;
    if (ch[CH_STATUS] != STATUS_DISTRIBUTED) return E_INVALID_CHANNEL_STATUS;
    if (!eq32(rent_payer->key, ch + CH_RENT_PAYER)) return E_INVALID_RENT_PAYER;
    Clock clock;
    sol_get_clock_sysvar(&clock);
    if (clock.slot <= rd64(ch + CH_OPEN_SLOT) + OPEN_SLOT_WINDOW) return E_CLOSE_TOO_EARLY;
    *rent_payer->lamports += *channel->lamports;
    *channel->lamports = 0;
    sol_memset_(channel->data, 0, CHANNEL_LEN);
    return 0;
}

/* ---- emit_event (228): the self-CPI target ------------------------------------------------------- */
static __attribute__((noinline)) u64 process_emit_event(Ctx *c) {
    if (c->n < 1) return E_NOT_ENOUGH_ACCOUNTS;
    if (!c->acc[0].is_signer) return E_MISSING_SIGNATURE;
    Pubkey pda; u8 bump;
    event_authority(c, &pda, &bump);
    if (!eq32(c->acc[0].key, &pda)) return E_INVALID_EVENT_AUTHORITY;
    return 0;
}

u64 entrypoint(const u8 *input) {
    Ctx c;
    deserialize(input, &c);
    if (c.data_len < 1) return ERR_INVALID_INSTRUCTION_DATA;
    switch (c.data[0]) {
    case 1: LOG("Instruction: Open"); return process_open(&c);
    case 4: LOG("Instruction: SettleAndSeal"); return process_settle_and_seal(&c);
    case 7: LOG("Instruction: Distribute"); return process_distribute(&c);
    case 9: LOG("Instruction: Reclaim"); return process_reclaim(&c);
    case 228: return process_emit_event(&c);
    case 2: case 3: case 5: case 6: case 8:
        LOG("testbed payment-channels: instruction not implemented");
        return E_NOT_IMPLEMENTED;
    default: return ERR_INVALID_INSTRUCTION_DATA;
    }
}
