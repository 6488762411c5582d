/* schema_keys.c: every key a job config may hold, with type, range, default and meaning.
 * The one place a config key is declared (see schema.h). */
#include <math.h>
#include "schema.h"

#define INF HUGE_VAL
#define U SCHEMA_UMD_ONLY
#define CMD SCHEMA_COMMAND_ONLY

const schema_key umdq_job_schema[] = {
    /* path, type, min, max, flags, choices, default, help */
    {"kind", SCHEMA_ENUM, 0, 0, 0, "umd|command", "\"umd\"", "what the job runs: the UMD trainer or a shell command"},
    {"name", SCHEMA_STRING, 0, 0, 0, NULL, NULL, "a label for the variant (\"MAE\"), shown in tables"},
    {"command", SCHEMA_STRING, 0, 0, CMD, NULL, NULL, "kind command: the shell command, with {dotted.key} fields"},
    {"params", SCHEMA_FREE, 0, 0, CMD, NULL, NULL, "kind command: free-form values for the command's {params.x} fields"},
    {"stall_timeout", SCHEMA_NUMBER, 0, INF, SCHEMA_NO_MAX, NULL, NULL, "seconds without step progress before the attempt is killed (0 = never; default 0 for commands, 1800 for umd)"},
    {"seed", SCHEMA_INT, 0, 4294967295.0, SCHEMA_NOT_IN_SWEEP, NULL, "0", "random seed (in a sweep: use \"seeds\")"},

    {"data.dataset", SCHEMA_ENUM, 0, 0, U, "fashion-mnist|mnist|cifar10|synthetic|imagenet64", "\"fashion-mnist\"", "data set (imagenet64: the downsampled ImageNet 64x64 .npz files)"},
    {"data.path", SCHEMA_STRING, 0, 0, U, NULL, NULL, "data directory (default for fashion-mnist: /usr/share/datasets/fashion-mnist; cifar10: data_batch_1..5.bin, test_batch.bin; imagenet64: train_data_batch_1..10.npz, val_data.npz)"},
    {"data.limit", SCHEMA_INT, 0, INF, U | SCHEMA_NO_MAX, NULL, "0", "use only the first N training images (0 = all)"},
    {"data.augment", SCHEMA_BOOL, 0, 0, U, NULL, NULL, "random-resized crop (area 0.8-1) and flip (default: on for RGB, off for grey)"},
    {"data.image_size", SCHEMA_INT, 4, 256, U, NULL, "16", "synthetic: image height and width"},
    {"data.channels", SCHEMA_INT, 1, 3, U, NULL, "1", "synthetic: channels (1 or 3)"},
    {"data.classes", SCHEMA_INT, 2, 256, U, NULL, "10", "synthetic: classes"},
    {"data.train_size", SCHEMA_INT, 1, 10000000, U, NULL, "2048", "synthetic: training images"},
    {"data.test_size", SCHEMA_INT, 1, 10000000, U, NULL, "512", "synthetic: test images"},

    {"model.patch", SCHEMA_INT, 1, 64, U, NULL, "4", "patch size p (image sides must be multiples)"},
    {"model.width", SCHEMA_INT, 4, 8192, U, NULL, "192", "width w of encoder and decoder (even, a multiple of heads)"},
    {"model.depth", SCHEMA_INT, 1, 128, U, NULL, "6", "encoder blocks"},
    {"model.dec_depth", SCHEMA_INT, 1, 128, U, NULL, "2", "decoder blocks"},
    {"model.heads", SCHEMA_INT, 1, 256, U, NULL, "3", "attention heads"},
    {"model.mlp_ratio", SCHEMA_INT, 1, 16, U, NULL, "4", "MLP hidden width / w"},
    {"model.cls_tokens", SCHEMA_INT, 1, 64, U, NULL, "4", "learned cls tokens whose mean is the representation"},

    {"umd.r_t0", SCHEMA_NUMBER, 0, 1, U, NULL, "0.5", "fraction of each batch that takes the clean (t = 0) step; 1 = MAE"},
    {"umd.mask_ratio", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0.375", "mask ratio of noisy rows; 0 with r_t0 0 = DiT"},
    {"umd.mask_ratio_t0", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0.75", "mask ratio of clean rows"},
    {"umd.schedule", SCHEMA_ENUM, 0, 0, U, "cosine|linear", "\"cosine\"", "noise schedule"},
    {"umd.timesteps", SCHEMA_INT, 1, 100000, U, NULL, "1000", "diffusion timesteps T"},
    {"umd.labels", SCHEMA_BOOL, 0, 0, U, NULL, "false", "class conditioning (label embedding with a null class)"},
    {"umd.label_dropout", SCHEMA_NUMBER, 0, 1, U, NULL, "0.1", "with labels: probability a noisy row's label becomes the null class"},

    {"train.steps", SCHEMA_INT, 1, 1e12, U, NULL, "1000", "optimiser steps"},
    {"train.batch", SCHEMA_INT, 1, 1 << 20, U, NULL, "128", "images per step"},
    {"train.lr", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MIN_OPEN, NULL, NULL, "peak learning rate (default base_lr * batch / 256)"},
    {"train.base_lr", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MIN_OPEN, NULL, "1.5e-4", "learning rate at batch 256"},
    {"train.warmup", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0.05", "fraction of steps of linear warm-up (then cosine to 0)"},
    {"train.weight_decay", SCHEMA_NUMBER, 0, 10, U, NULL, "0.05", "AdamW decoupled weight decay (not on biases, cls tokens or the mask token)"},
    {"train.beta1", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0.9", "AdamW beta1"},
    {"train.beta2", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0.95", "AdamW beta2"},
    {"train.eps", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MIN_OPEN, NULL, "1e-8", "AdamW epsilon"},
    {"train.clip", SCHEMA_NUMBER, 0, INF, U | SCHEMA_NO_MAX, NULL, "1.0", "global gradient-norm clip (0 = off)"},
    {"train.ema", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0", "EMA decay of the weights (0 = no EMA)"},
    {"train.log_every", SCHEMA_INT, 1, 1e12, U, NULL, "50", "steps between loss reports"},
    {"train.ckpt_every", SCHEMA_INT, 0, 1e12, U, NULL, "500", "steps between checkpoints (0 = only at the end)"},
    {"train.device", SCHEMA_ENUM, 0, 0, U, "auto|cpu|cuda", "\"auto\"", "where to train: auto = the worker's device"},
    {"train.precision", SCHEMA_ENUM, 0, 0, U, "fp32|tf32|bf16", "\"fp32\"", "arithmetic (tf32 and bf16 need cuda)"},
    {"train.threads", SCHEMA_INT, 0, 1024, U, NULL, "0", "CPU threads (0 = every core)"},
    {"train.recompute", SCHEMA_ENUM, 0, 0, U | SCHEMA_OR_BOOL, "full|partial|norms|off", NULL, "run parts of each block again in the backward instead of keeping them: \"full\" (or true) keeps only each block's input, a fraction of the activation memory for about a third more arithmetic; \"partial\" keeps attention's tensors and runs the LayerNorms, the residual and fc1 again, about half the blocks' memory for about a ninth more; \"norms\" keeps fc1's output too and runs only the LayerNorms and the residual again, about a fifth of the blocks' memory for two LayerNorm passes; same results either way (default: off, \"norms\", \"partial\" then \"full\" when the arenas do not fit)"},

    /* evaluation runs when the config has an "eval" object ({} = every default) */
    {"eval.enabled", SCHEMA_BOOL, 0, 0, U, NULL, "true", "with an eval block: false skips the evaluation"},
    {"eval.batch", SCHEMA_INT, 1, 65536, U, NULL, "128", "images per forward pass of the evaluation"},
    {"eval.probe_shots", SCHEMA_INT, 1, 1000000, U, NULL, "100", "ridge probe: training images per class"},
    {"eval.ridge_lambda", SCHEMA_NUMBER, 0, INF, U | SCHEMA_MIN_OPEN | SCHEMA_NO_MAX, NULL, "1024", "ridge probe: L2 penalty of the closed form"},
    {"eval.probe_train", SCHEMA_INT, 0, INF, U | SCHEMA_NO_MAX, NULL, "10000", "linear probe: training images whose features are cached (0 = all)"},
    {"eval.probe_test", SCHEMA_INT, 0, INF, U | SCHEMA_NO_MAX, NULL, "0", "probes: test images scored (0 = all)"},
    {"eval.probe_epochs", SCHEMA_INT, 1, 1000, U, NULL, "20", "linear probe: epochs over the cached features"},
    {"eval.probe_lr", SCHEMA_NUMBER, 0, 10, U | SCHEMA_MIN_OPEN, NULL, "1e-2", "linear probe: Adam learning rate (cosine to 0)"},
    {"eval.probe_noise_index", SCHEMA_INT, 0, 99999, U, NULL, "50", "r_t0 = 0 runs: probe features from input noised at this index"},
    {"eval.val_images", SCHEMA_INT, 0, INF, U | SCHEMA_NO_MAX, NULL, "1024", "test images for the validation losses (0 = skip them)"},
    {"eval.recon_mask", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0.75", "mask ratio of the masked reconstruction MSE"},
    {"eval.fid_samples", SCHEMA_INT, 0, 1000000, U, NULL, "512", "images generated for FID (0 = no sampling, no FID)"},
    {"eval.ddim_steps", SCHEMA_INT, 1, 100000, U, NULL, "50", "DDIM (eta = 1) steps S of the sampler (the paper: 125)"},
    {"eval.cfg_scale", SCHEMA_NUMBER, 0, 100, U, NULL, "1.5", "classifier-free guidance scale s (labelled models; 1 = none)"},
    {"eval.grid", SCHEMA_INT, 0, 1024, U, NULL, "64", "samples in the PNG grid (0 = no grid)"},
    {"eval.fid_real", SCHEMA_INT, 0, INF, U | SCHEMA_NO_MAX, NULL, "0", "test images for the real statistics of FID (0 = all)"},
    {"eval.classifier_epochs", SCHEMA_INT, 1, 1000, U, NULL, "5", "FID feature network: training epochs (part of its cache key)"},
    {"eval.cache_dir", SCHEMA_STRING, 0, 0, U, NULL, NULL, "where FID feature networks are cached (default $UMDQ_CACHE, else WORKDIR/../cache)"},

    /* label fine-tuning (UMD.md) after pre-training, when finetune.steps > 0 */
    {"finetune.steps", SCHEMA_INT, 0, 1e12, U, NULL, "0", "fine-tuning steps with labels (0 = none)"},
    {"finetune.batch", SCHEMA_INT, 0, 1 << 20, U, NULL, "0", "images per fine-tuning step (0 = train.batch)"},
    {"finetune.lr", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MIN_OPEN, NULL, NULL, "peak fine-tuning learning rate (default base_lr * batch / 256)"},
    {"finetune.base_lr", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MIN_OPEN, NULL, "1.5e-4", "fine-tuning learning rate at batch 256"},
    {"finetune.warmup", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0", "fraction of fine-tuning steps of linear warm-up (then cosine to 0)"},
    {"finetune.beta2", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0.999", "fine-tuning AdamW beta2"},
    {"finetune.weight_decay", SCHEMA_NUMBER, 0, 10, U, NULL, "0", "fine-tuning AdamW weight decay"},
    {"finetune.r_t0", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0.05", "fine-tuning: fraction of clean rows (unconditional, umd.mask_ratio_t0 masked)"},
    {"finetune.mask_ratio", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0", "fine-tuning: mask ratio of noisy rows"},
    {"finetune.label_dropout", SCHEMA_NUMBER, 0, 1, U, NULL, "0.1", "fine-tuning: probability a label becomes the null class"},
    {"finetune.ema", SCHEMA_NUMBER, 0, 1, U | SCHEMA_MAX_OPEN, NULL, "0.9999", "fine-tuning: EMA decay of the weights sampled from (0 = sample the weights)"},
    {0, 0, 0, 0, 0, 0, 0, 0}
};
