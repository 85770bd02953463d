# Anchor: HF transformers + PEFT LoRA under PyTorch DDP (torchrun), the
# data-parallel counterpart of /work/shared/anchors/peft_anchor.py (which it
# follows for the model and LoRA settings) for bench/dist_gpu.sh.
#
#   python3 -m torch.distributed.run --nproc_per_node N bench/peft_ddp_anchor.py
#
# Every rank builds the same random-init Llama (the 3B shape by default,
# bf16), wraps the PEFT model in DistributedDataParallel (gradients of the
# trainable LoRA parameters all-reduced over NCCL), and trains on random
# sequences: batch BATCH per rank, SEQ tokens, an optimizer step every ACCUM
# micro-steps (no_sync before the last, as DDP accumulation is done).
# Rank 0 prints one JSON line with the aggregate tokens/s over all ranks
# and writes it to $OUT/peft_ddp_<N>.json.
#
# Environment: SHAPE (llama-3.2-3b | llama-3.2-1b), SEQ (1024), BATCH (1),
# ACCUM (1), STEPS (measured micro-steps, 40), WARMUP (8), OUT (.).
import contextlib, json, os, time

import torch
import torch.distributed as dist
import transformers, peft
from peft import LoraConfig, get_peft_model
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "llama-3.2-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                         num_attention_heads=24, num_key_value_heads=8, head_dim=128),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64),
}
env = os.environ.get
shape, seq, batch = env("SHAPE", "llama-3.2-3b"), int(env("SEQ", "1024")), int(env("BATCH", "1"))
accum, steps, warmup = int(env("ACCUM", "1")), int(env("STEPS", "40")), int(env("WARMUP", "8"))

dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
local = int(env("LOCAL_RANK", "0"))
torch.cuda.set_device(local)
dev = torch.device("cuda", local)

cfg = LlamaConfig(vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                  tie_word_embeddings=True, rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"}, **SHAPES[shape])
cfg._attn_implementation = "sdpa"
torch.manual_seed(0)  # the same weights on every rank (DDP also broadcasts rank 0's)
torch.set_default_dtype(torch.bfloat16)
with dev:
    base = LlamaForCausalLM(cfg)
torch.set_default_dtype(torch.float32)
layers = cfg.num_hidden_layers
model = get_peft_model(base, LoraConfig(r=6, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                       layers_to_transform=list(range(layers - 12, layers)), task_type="CAUSAL_LM"))
model.train()
ddp = DDP(model, device_ids=[local])
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.0)
g = torch.Generator(device=dev).manual_seed(1 + rank)  # each rank its own data


def micro_step(i):
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=dev, generator=g)
    last = (i + 1) % accum == 0
    with contextlib.nullcontext() if last else ddp.no_sync():
        loss = ddp(input_ids=x, labels=x).loss / accum
        loss.backward()
    if last:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss


for i in range(warmup):
    micro_step(i)
torch.cuda.synchronize()
dist.barrier()
torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
for i in range(steps):
    loss = micro_step(i)
torch.cuda.synchronize()
dist.barrier()
dt = time.perf_counter() - t
peak = torch.tensor([torch.cuda.max_memory_allocated() / 2**30], device=dev)
dist.all_reduce(peak, op=dist.ReduceOp.MAX)
if rank == 0:
    out = {"anchor": "peft_ddp", "gpu": torch.cuda.get_device_name(), "world_size": world, "torch": torch.__version__,
           "transformers": transformers.__version__, "peft": peft.__version__, "shape": shape, "seq": seq,
           "batch_per_rank": batch, "accum": accum, "micro_steps": steps,
           "tokens_per_s": round(world * batch * seq * steps / dt, 1),
           "peak_mem_gib": round(float(peak), 2), "loss": float(loss) * accum}
    print(json.dumps(out), flush=True)
    with open(os.path.join(env("OUT", "."), f"peft_ddp_{world}.json"), "w") as f:
        json.dump(out, f, indent=1)
dist.destroy_process_group()
