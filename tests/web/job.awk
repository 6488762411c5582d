# A stand-in training run for the dashboard test: prints a loss curve and results as umdq JSON lines.
#   awk -v lr=LR -v width=W -v seed=S -v steps=N [-v sleep=1] -f job.awk
# With sleep=1 it prints one step a second (a job that stays RUNNING).
BEGIN {
  srand(seed + 1)
  if (steps == 0) steps = 300
  l = 2.3
  for (s = 1; s <= steps; s++) {
    l = l * (1 - lr / 25) + 0.02 * (64 / width) * lr + 0.004 * rand()
    printf "{\"umdq\":\"metric\",\"step\":%d,\"loss\":%.5f}\n", s, l
    if (s % 10 == 0) printf "{\"umdq\":\"metric\",\"step\":%d,\"grad_norm\":%.5f}\n", s, 1.5 * exp(-s / 80) + 0.1 * rand()
    if (s % 50 == 0) printf "step %d loss %.4f\n", s, l > "/dev/stderr"
    fflush()
    if (sleep) system("sleep 1")
  }
  top1 = 0.55 + 0.5 * lr - 0.9 * lr * lr + 0.02 * width / 128 + 0.01 * rand()
  printf "{\"umdq\":\"result\",\"final_loss\":%.5f}\n", l
  printf "{\"umdq\":\"result\",\"probe_ridge_top1\":%.4f}\n", top1
  printf "{\"umdq\":\"result\",\"probe_knn_top1\":%.4f}\n", top1 - 0.04 + 0.01 * rand()
  printf "{\"umdq\":\"result\",\"fid\":%.3f}\n", 35 - 40 * lr + 900 / width + 2 * rand()
  printf "{\"umdq\":\"result\",\"img_per_s\":%.1f}\n", 180000 / width * (1 + 0.05 * rand())
  printf "{\"umdq\":\"result\",\"sample_grid\":\"samples.png\"}\n"
}
