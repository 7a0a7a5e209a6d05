/* test_plan.c - the multi-device plan that the GPU backend executes
   (docs/design.md §5), checked on the CPU: which device runs which branch, and the
   NCCL collectives of one training step. */
#define PARAFORMER_IMPLEMENTATION
#include "../paraformer.h"
#include "pf_test.h"

#include <stdio.h>
#include <string.h>

static void test_round_robin(void) {
    int dev[8], b, ok = 1;
    check(pf_branch_plan(8, 3, NULL, dev) == PF_OK, "round-robin: 8 branches on 3 devices");
    for (b = 0; b < 8; b++) ok &= dev[b] == b % 3;
    check(ok, "round-robin: branch b on device b %% 3");
    check(pf_branch_plan(4, 1, NULL, dev) == PF_OK && dev[0] == 0 && dev[1] == 0 && dev[2] == 0 && dev[3] == 0,
          "one device runs every branch");
    check(pf_branch_plan(2, 3, NULL, dev) == PF_ERR_ARG, "more devices than branches refused: %s", pf_last_error());
    check(pf_branch_plan(2, 0, NULL, dev) == PF_ERR_ARG, "no device refused: %s", pf_last_error());
}

static void test_cost_model(void) {
    /* longest first: 5 -> d0 (loads 5, 0), 4 -> d1 (5, 4), 3 -> d1, the
       lighter (5, 7), 2 -> d0 (7, 7), 1 -> d0, the lower of a tie (8, 7) */
    double cost[5] = {1, 5, 3, 4, 2};
    int dev[5], want[5] = {0, 0, 1, 1, 0}, b, ok = 1;
    double load[2] = {0, 0};
    check(pf_branch_plan(5, 2, cost, dev) == PF_OK, "cost model: 5 branches on 2 devices");
    for (b = 0; b < 5; b++) { ok &= dev[b] == want[b]; load[dev[b]] += cost[b]; }
    check(ok, "cost model: longest first onto the least-loaded device (%d %d %d %d %d)", dev[0], dev[1], dev[2], dev[3],
          dev[4]);
    check(load[0] == 8 && load[1] == 7, "cost model: loads 8 and 7 (of 15)");
    {
        double equal[4] = {2, 2, 2, 2};
        int d4[4];
        check(pf_branch_plan(4, 2, equal, d4) == PF_OK && d4[0] == 0 && d4[1] == 1 && d4[2] == 0 && d4[3] == 1,
              "equal costs: the cost model gives round-robin");
    }
    cost[2] = -1;
    check(pf_branch_plan(5, 2, cost, dev) == PF_ERR_ARG, "a negative cost refused: %s", pf_last_error());
}

static void test_collectives(void) {
    pf_config c;
    pf_collective seq[8];
    size_t act = (size_t)32 * 17 * 64;
    int n;
    c = shape_config(28, 1, 7, 64, 4, 128, 4, 2, 10);
    n = pf_collective_plan(&c, 32, 1, 1, 1000, seq, 8);
    check(n == 0, "one device, one replica: no collectives (the plain path)");
    n = pf_collective_plan(&c, 32, 2, 1, 1000, seq, 8);
    check(n == 4, "two devices: four collectives per step (got %d)", n);
    check(n == 4 && seq[0].op == PF_COLL_BROADCAST && seq[0].root == 0 && seq[0].count == act && !strcmp(seq[0].what, "x0"),
          "forward: X0 [B,T,D] broadcast from device 0");
    check(n == 4 && seq[1].op == PF_COLL_REDUCE && seq[1].root == 0 && seq[1].count == act,
          "forward: the devices' branch outputs summed onto device 0");
    check(n == 4 && seq[2].op == PF_COLL_BROADCAST && seq[2].count == act && seq[3].op == PF_COLL_REDUCE &&
              !strcmp(seq[3].what, "d x0"),
          "backward mirrors it: the aggregate's gradient broadcast, dX0 reduced");
    n = pf_collective_plan(&c, 32, 2, 3, 1000, seq, 8);
    check(n == 5 && seq[4].op == PF_COLL_ALLREDUCE && seq[4].root == -1 && seq[4].count == 1000,
          "data-parallel replicas: the gradients all-reduced last");
    n = pf_collective_plan(&c, 32, 1, 2, 1000, seq, 8);
    check(n == 1 && seq[0].op == PF_COLL_ALLREDUCE, "replicas of a one-device model: only the gradient all-reduce");
    check(pf_collective_plan(&c, 32, 5, 1, 1000, seq, 8) == -1, "more devices than branches refused: %s", pf_last_error());
    check(pf_collective_plan(&c, 32, 2, 2, 1000, seq, 3) == -1, "too small an output refused: %s", pf_last_error());
}

int main(void) {
    test_round_robin();
    test_cost_model();
    test_collectives();
    return test_summary();
}
