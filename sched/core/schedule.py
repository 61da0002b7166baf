"""One scheduling cycle: `schedule(snapshot, config, now) -> Decisions`.

Pure: no I/O, no clock (time comes in as `now`), no randomness. The same snapshot and
config always give the same decisions. The phases:

  1. Build this cycle's Capacity from the snapshot (never the live state) and the running
     counts (quota.py); the availability profile (profile.py) is built when the first
     reservation is sought.
  2. Order pending jobs (order.py): tier, priority score, submit time, id.
  3. Gate each job in that order, before any capacity is looked at: a job held until its
     begin time (the start backoff after a requeue; Job.begin_time), a request that can
     never run (validate_job), unmet dependencies (deps.py; a failed afterok parent cancels
     the job), array throttle and per-user running limits, then the queue quota (quota.py).
     A job that would borrow beyond its quota is deferred to phase 6.
  4. Admit the within-quota jobs in order: an all-or-nothing, topology-aware placement
     (place.py) that delays no reservation (reserve.py); a gang that fits starts whole,
     unless it fits only across more leaves than it needs and has waited less than leaf_wait
     (Cycle._leaf_wait): then it waits, reserved on its fewest leaves like a blocked job.
     A blocked job goes to phase 5 at its turn; if it does not preempt and is among the
     first `reservation_depth` ("all": every one), it gets a Reservation: the first time it
     fits for its whole time limit on the profile (past DEEP reservations starts are
     decided on the profile too: the same decisions, faster; Cycle._deep). Without backfill
     the first job that cannot start blocks every job after it.
  5. Preemption (preempt.py), for a blocked within-quota gang at its turn in phase 4: if its
     queue may preempt (or reclaim borrowed GPUs) and it is among the first
     `preemption_depth` to look, choose a minimal victim set; the victims go to
     Decisions.preemptions and the placement they free is held for the job by a Reservation
     at `now`, so no later job takes it while they drain. A job whose victims (from
     Snapshot.preempting) still run chooses no new ones: it waits, holding their place.
  6. Admit the borrowing jobs the same way as phase 4, on what phases 4-5 left idle; their
     Starts are marked `borrowing`. Borrowers never preempt.
  7. Every job that neither starts nor is cancelled has a pending reason.
"""

from __future__ import annotations

from dataclasses import replace

from .capacity import Capacity, Fitting, WhatIf
from .config import ClusterConfig
from .deps import CANCEL
from .deps import check as check_dependencies
from .fairshare import factors
from .memo import Memo
from . import reasons
from .model import Decisions, Job, Placement, Preemption, Reason, Reservation, Snapshot, Start
from .order import order_pending
from .place import NoFit, fewest_leaves, find_mig, find_placement, leaves_spanned
from .preempt import choose as choose_victims
from .preempt import may_preempt
from .preempt import pool as victim_pool
from .preempt import reason as preemption_reason
from .quota import BORROW, WITHIN, Usage
from .profile import Profile
from .reserve import Timeline, earliest
from .validate import validate_job  # noqa: F401  (also imported from here by callers)


def schedule(snapshot: Snapshot, config: ClusterConfig, now: float, memo: Memo | None = None) -> Decisions:
    """One cycle. `memo` (memo.py) is the shell's own store of answers cycles share; the
    decisions are the same with it, without it (a cold cycle) or with another one."""
    return Cycle(snapshot, config, now, memo=memo).run().decisions


class Cycle:
    """The state of one cycle; `explain` runs one with a `focus` job that always gets a
    reservation (so its estimated start is known) whatever the depth."""

    def __init__(self, snapshot: Snapshot, config: ClusterConfig, now: float, focus: int | None = None,
                 memo: Memo | None = None):
        self.snapshot, self.config, self.now, self.focus, self.memo = snapshot, config, now, focus, memo
        self.settings = config.scheduler
        self.decisions = Decisions()
        self.blocker: int | None = None
        # Capacity only shrinks during the cycle, so once a shape fails against a set of
        # reservations it may not touch, every later job of that shape and set fails too.
        self.failed: dict[tuple, Reason] = {}
        self.order: list[Job] = []
        # Per-cycle memos, so the 10,000th job costs a few dict look-ups (bench/cycle.py):
        self._invalid: dict[tuple, Reason | None] = {}  # request -> validate_job
        self._unsafe: dict[int, tuple[int, ...]] = {}  # time limit -> reservations it overlaps
        self._by_start: list[Reservation] = []  # the reservations by (start, job id), for _why
        self._culprits: dict[int, Reason] = {}  # reservation job id -> _why's reason naming it
        # Bumped by every start and reservation: between two bumps, jobs with the same request
        # and nothing of their own to check (no dependency, array or per-user limit) meet the
        # same state and get the same outcome, so it is remembered per request.
        self.generation = 0
        # (generation, GPUs per node, lifted reservations) -> the WhatIf that lifts them (its
        # counts; placed on by _place_lent), or the Fitting counts carried over by _reserve.
        self._fitting: dict[tuple, WhatIf | Fitting] = {}
        self._per_user = {name for name, q in config.queues.items() if q.max_running_per_user is not None}
        # Queues whose blocked jobs may search for victims (_preempt): a search uses up one of
        # the cycle's preemption_depth, so such a job's outcome is reused only once none is left.
        self._may_search = {name for name, q in config.queues.items() if q.preempts or q.quota_gpus is not None}
        self._commits = 0  # usage.commit calls so far: a per-user count may change without a generation
        # Preemption (phase 5): the victims of earlier cycles still running, per preemptor;
        # how many more jobs may search this cycle; victims and preemptors of this cycle.
        running = {r.job.id: r for r in snapshot.running} if snapshot.preempting else {}
        self._draining = {p: tuple(running[v] for v in sorted(vs) if v in running)
                          for p, vs in snapshot.preempting.items()}
        self._draining = {p: runs for p, runs in self._draining.items() if runs}
        self._special = set(self._draining) | ({focus} if focus is not None else set())
        self._search_left = self.settings.preemption_depth
        self._victims: list | None = None  # preempt.pool, built on first need
        self._chosen: set[int] = set()
        self._preemptors: set[int] = set()
        self._backfill_reserved = 0  # reservations counted against reservation_depth
        self._busy: Capacity | None = None  # running and started only (_deep)
        self._first: Reservation | None = None  # the earliest reservation (by start, then job id)
        # A reservation was sought after one that starts later than now: past DEEP reservations
        # the profile decides (Cycle._deep), built then if the walks found the first ones.
        self._profile_due = False
        self._fewest: dict[tuple[int, int], int] = {}  # (nodes, GPUs) -> fewest_leaves (_leaf_wait)

    def run(self) -> "Cycle":
        s, snap = self.settings, self.snapshot

        # Phase 1: this cycle's own view of free capacity, job ends and running counts.
        self.cap = Capacity(self.config, snap, self.memo)
        self.reserving = (s.backfill and s.reservation_depth > 0) or self.focus is not None
        # The availability profile (profile.py), built when it is first needed (_build_profile);
        # until then the GPUs this cycle takes (placement, from, until) are noted for it.
        self.profile: Profile | None = None
        # Up to DEEP reservations (a shallow reservation_depth) are found by reserve.earliest's
        # walk over the job ends instead (the same answers; while every reservation starts now,
        # remembered across cycles in the Memo).
        self.timeline = Timeline(snap.running, self.now) if self.reserving else None
        self._overdue = (self.timeline.overdue if self.timeline is not None
                         else any(r.end_time <= self.now for r in snap.running))
        self._taken: list[tuple[Placement, float, float]] = []
        # A preemptor keeps its quota from the moment it chooses victims until it starts (quota.py).
        self.usage = Usage(snap, committed=tuple(j for j in snap.pending if j.id in snap.preempting
                                                 and (j.begin_time is None or j.begin_time <= self.now)))

        # Phase 2: priority order.
        users, queues = factors(snap, self.config) if s.weight_fairshare else ({}, {})
        self.order = order_pending(snap.pending, self.config, self.now, users, queues)

        # Phases 3, 4 and 5: gates, then within-quota admission (or preemption) in order.
        borrowers: list[Job] = []
        seen: dict[tuple, tuple[int, object]] = {}  # request -> (generation, BORROW or its Reason)
        self._steps(self.order, seen, borrowers)

        # Phase 6: borrowing on what is left idle (quota and limits re-checked: usage grew).
        self._steps(borrowers, {}, None)
        return self

    def _steps(self, jobs: list[Job], seen: dict[tuple, tuple[int, object]], borrowers: list[Job] | None) -> None:
        """_step for each job in order, with its commonest case inline (most of a long queue,
        bench/cycle.py): a plain job, not held and not behind a FIFO blocker, whose request
        already met the same state (generation) gets the same outcome, as _step would give it."""
        step, pending_reasons = self._step, self.decisions.pending_reasons
        special, per_user = self._special, self._per_user
        for job in jobs:
            if (self.blocker is None and job.begin_time is None and not (
                    job.after_ok or job.after_any or job.array_id is not None or job.array_throttle is not None
                    or job.id in special or job.queue in per_user)):
                hit = seen.get((job.queue, job.num_nodes, job.gpus_per_node, job.max_leaves, job.time_limit, job.mig))
                if hit is not None and hit[0] == self.generation:
                    if hit[1] is BORROW:
                        borrowers.append(job)
                    else:
                        pending_reasons[job.id] = hit[1]
                    continue
            step(job, seen, borrowers)

    def _step(self, job: Job, seen: dict[tuple, tuple[int, object]], borrowers: list[Job] | None) -> None:
        """Gate and admit one job; `borrowers` is None in phase 6 (borrowing is allowed)."""
        if job.begin_time is not None and job.begin_time > self.now:  # held (start backoff)
            self.decisions.pending_reasons[job.id] = reasons.begin_time(job.begin_time, job.begin_cause)
            return
        # Strict FIFO: the first blocked job blocks the rest, except a preemptor whose victims
        # are already being stopped for it: that decision was made and is followed through.
        if self.blocker is not None and job.id not in self._draining:
            self.decisions.pending_reasons[job.id] = reasons.priority(self.blocker)
            return
        plain = not (job.after_ok or job.after_any or job.array_id is not None or job.array_throttle is not None
                     or job.id in self._special)
        reuse = plain
        if plain:
            request = (job.queue, job.num_nodes, job.gpus_per_node, job.max_leaves, job.time_limit, job.mig)
            if job.queue in self._per_user:
                # Its user's running count in the queue is its own: part of the key, with the
                # commits that change it within a generation (a committed job counts itself out).
                if job.id in self.usage.committed:
                    plain = reuse = False
                else:
                    request += (job.user, self._commits)
                    reuse = self._search_left <= 0 or job.queue not in self._may_search
        if reuse:
            hit = seen.get(request)
            if hit is not None and hit[0] == self.generation:
                if hit[1] == BORROW:
                    borrowers.append(job)
                else:
                    self.decisions.pending_reasons[job.id] = hit[1]
                return
        generation = self.generation
        verdict = self._gate(job)
        if verdict == BORROW and borrowers is not None:
            borrowers.append(job)
        elif verdict is not None:
            self._admit(job, borrowing=verdict == BORROW)
        if plain and self.generation == generation:
            seen[request] = (generation, BORROW if verdict == BORROW and borrowers is not None
                             else self.decisions.pending_reasons[job.id])

    # --- phase 3 -------------------------------------------------------------------------

    def _gate(self, job: Job) -> str | None:
        """WITHIN or BORROW when the job may try for capacity; else records why not."""
        request = (job.queue, job.num_nodes, job.gpus_per_node, job.max_leaves, job.time_limit, job.mig,
                   job.array_throttle)  # what validate_job reads
        try:
            reason = self._invalid[request]
        except KeyError:
            reason = self._invalid[request] = validate_job(job, self.config)
        if reason is None and (job.after_ok or job.after_any):
            dep = check_dependencies(job, self.snapshot.finished)
            if dep is not None and dep[0] == CANCEL:
                self.decisions.cancels[job.id] = dep[1]
                return None
            reason = dep[1] if dep else None
        if reason is None:
            reason = self.usage.limits(job, self.config)
        if reason is None:
            verdict = self.usage.quota(job, self.config)
            if verdict in (WITHIN, BORROW):
                return verdict
            reason = verdict
        self.decisions.pending_reasons[job.id] = reason
        return None

    # --- phases 4 and 6 ------------------------------------------------------------------

    def _admit(self, job: Job, borrowing: bool) -> None:
        if job.mig is not None:
            reason = self._admit_mig(job, borrowing)
        else:
            reason = self._admit_gang(job, borrowing)
        if reason is None:
            return
        if reason.code == reasons.LEAF_WAIT:
            self._wait_for_leaf(job, reason, borrowing)
            return
        if job.mig is None and (not borrowing or job.id in self._draining):
            waiting = self._preempt(job)
            if waiting is not None:
                self.usage.commit(job)  # later jobs of this cycle must not take its quota or limits
                self._commits += 1
                self.decisions.pending_reasons[job.id] = waiting
                if not self.settings.backfill:
                    self.blocker = job.id
                return
        self.decisions.pending_reasons[job.id] = reason
        if not self.settings.backfill:
            self.blocker = job.id
        if job.mig is None and self.reserving and (job.id == self.focus or not borrowing):
            self._reserve(job)

    def _admit_mig(self, job: Job, borrowing: bool) -> Reason | None:
        # MIG slices are never held by reservations (those hold whole GPUs only).
        profile, count = job.mig
        picks = find_mig(self.cap, profile, count)
        if isinstance(picks, NoFit):
            return picks.reason
        placement = self.cap.take_mig(picks[0][0], profile, count)
        self._start(job, placement, borrowing)
        return None

    def _admit_gang(self, job: Job, borrowing: bool) -> Reason | None:
        """Start the job unless it fits nowhere that every reservation it overlaps allows."""
        if self._deep():
            return self._admit_on_profile(job, borrowing)
        end = self.now + job.time_limit
        res = self.decisions.reservations
        unsafe = self._unsafe.get(job.time_limit)
        if unsafe is None:  # the reservations it would still be running at
            unsafe = self._unsafe[job.time_limit] = tuple(r.job_id for r in res if r.start_time < end)
        key = (job.num_nodes, job.gpus_per_node, job.max_leaves, unsafe)
        reason = self.failed.get(key)
        if reason is not None:
            return reason
        # Backfill: the reservations this job ends before may lend it their GPUs. Most
        # candidates do not fit even so, which the counters tell without lifting any hold.
        lenders = [r.job_id for r in res if r.start_time >= end]
        picks = self._would_place(job, lenders)
        placement = None
        if not isinstance(picks, NoFit) and not lenders:
            picks = self._place(job)
            waiting = self._leaf_wait(job, picks)
            if waiting is not None:
                return waiting
            placement = None if isinstance(picks, NoFit) else self.cap.take(picks)
        elif not isinstance(picks, NoFit):
            picks, placement = self._place_lent(job, lenders)
            waiting = self._leaf_wait(job, picks)
            if waiting is not None:
                return waiting
            if placement is not None:
                self.cap.occupy(placement)  # its GPUs are busy, lent or not
        if placement is not None:
            self._start(job, placement, borrowing)
            return None
        reason = self.failed[key] = self._why(job, picks.reason, unsafe)
        return reason

    def _deep(self) -> bool:
        """Past DEEP reservations, starts are decided on the profile: the Capacity's lending
        what-ifs cost a pass over every reservation per job, the profile's a few heap steps.
        Both decide the same start and placement (a start now fits [now, now + time limit)
        on the GPUs no overlapping reservation holds: the window of the profile at now).
        Not while a running job is past its time limit: the profile frees its GPUs at now
        (a reservation may start then) but no job may start on them before it is reaped."""
        if len(self.decisions.reservations) <= DEEP or self._overdue:
            return False
        if self.profile is None:
            if not self._profile_due:
                return False
            self._build_profile()
        if self._busy is None:
            # What runs or starts, without any reservation: tells a job blocked by reservations
            # from one blocked by running jobs, for its pending reason.
            self._busy = Capacity(self.config, self.snapshot, self.memo)
            for s in self.decisions.starts:
                if any(a.gpus for a in s.placement):
                    self._busy.occupy(s.placement)
        return True

    def _admit_on_profile(self, job: Job, borrowing: bool) -> Reason | None:
        found = self.profile.earliest(job.num_nodes, job.gpus_per_node, job.max_leaves, job.time_limit,
                                      self.settings.topology_aware, until=self.now)
        if found is not None:
            waiting = self._leaf_wait(job, [(self.cap.index[a.node], 0) for a in found[1]])
            if waiting is not None:
                return waiting
            self.cap.occupy(found[1])  # busy, whatever holds it overlaps (they start after it ends)
            self._start(job, found[1], borrowing)
            return None
        key = (job.num_nodes, job.gpus_per_node, job.max_leaves, job.time_limit, self.generation)
        reason = self.failed.get(key)
        if reason is None:
            reason = self.failed[key] = self._why_deep(job)
        return reason

    def _why_deep(self, job: Job) -> Reason:
        """As _why: the reservation the job's run would overlap (the earliest) if running jobs
        alone leave room for it; else why it fits nowhere now (counted on the profile, as
        find_placement would count with the lending reservations lifted)."""
        busy, N, G, topo = self._busy, job.num_nodes, job.gpus_per_node, self.settings.topology_aware
        verdict = find_placement(busy, N, G, job.max_leaves, topo, pick=False)
        first = self._first
        if not isinstance(verdict, NoFit) and first.start_time < self.now + job.time_limit:
            return reasons.reservation(first.job_id, first.start_time, tuple(a.node for a in first.placement))
        window = Fitting(*self.profile.fitting_now(G, job.time_limit))
        verdict = find_placement(self.cap, N, G, job.max_leaves, topo, what_if=window, pick=False)
        if isinstance(verdict, NoFit):
            return verdict.reason
        return reasons.resources_for(N, G, job.time_limit)

    # --- leaf wait (scheduler.leaf_wait; Slurm's --switches=count@max-time) -------------

    def _leaf_wait(self, job: Job, picks) -> Reason | None:
        """LeafWait if the gang should not start on `picks` (its best placement now): they span
        more leaves than the fewest it could ever need, and it became eligible less than
        leaf_wait seconds ago. Else None: it starts (once the wait is over, wherever it fits)."""
        wait = self.settings.leaf_wait
        if (not wait or isinstance(picks, NoFit) or job.num_nodes < 2 or not self.settings.topology_aware
                or job.id in self._draining):  # a preemptor's place was chosen with its victims
            return None
        until = eligible_since(job) + wait
        if until <= self.now:
            return None
        spans = leaves_spanned(self.cap, (i for i, _ in picks))
        shape = (job.num_nodes, job.gpus_per_node)
        fewest = self._fewest.get(shape)
        if fewest is None:
            fewest = self._fewest[shape] = fewest_leaves(self.cap, *shape)
        return reasons.leaf_wait(fewest, spans, until) if spans > fewest else None

    def _wait_for_leaf(self, job: Job, reason: Reason, borrowing: bool) -> None:
        """A gang held back by its leaf wait keeps its place as a blocked job does: a reservation
        (within reservation_depth) on a placement of its fewest leaves at the earliest time one
        is free, which later jobs only backfill around."""
        self.decisions.pending_reasons[job.id] = reason
        if not self.settings.backfill:
            self.blocker = job.id
        generation = self.generation
        if self.reserving and (job.id == self.focus or not borrowing):
            self._reserve(replace(job, max_leaves=int(reason.need)))
        if self.generation == generation:
            self.generation += 1  # its outcome hangs on its own wait: no other job may reuse it

    # --- phase 5 -------------------------------------------------------------------------

    def _preempt(self, job: Job) -> Reason | None:
        """Phase 5 for a blocked within-quota gang: its "Preempting" reason, or None."""
        draining = self._draining.get(job.id)
        if draining:  # victims signalled by an earlier cycle still stop: wait, choose no more
            self._hold_freed(job, draining)
            return reasons.preempting(tuple(r.job.id for r in draining))
        if self._search_left <= 0:
            return None
        q = self.config.queues[job.queue]
        if not q.preempts and q.quota_gpus is None:  # may neither preempt nor reclaim
            return None
        if self._victims is None:
            self._victims = victim_pool(self.snapshot, self.config, self.cap, self.now)
        victims = [v for v in self._victims if v.id not in self._chosen and may_preempt(job, v.run, self.config)]
        if not victims:
            return None
        self._search_left -= 1
        choice = choose_victims(self.cap, job, victims, self.settings.topology_aware)
        if choice is None:
            return None
        for v in choice.victims:
            self._chosen.add(v.id)
            self.decisions.preemptions.append(Preemption(v.id, job.id, preemption_reason(job, v.run, self.config)))
        self._hold(job, choice.placement)
        return reasons.preempting(tuple(v.id for v in choice.victims))

    def _hold_freed(self, job: Job, draining) -> None:
        """Hold, for a job whose victims drain, where it fits once they have stopped."""
        with self.cap.trial():
            for r in draining:
                self.cap.give(r.placement)
            picks = self._place(job)
            placement = None if isinstance(picks, NoFit) else self.cap.peek(picks)
        if placement is not None:
            self._hold(job, placement)

    def _hold(self, job: Job, placement: Placement) -> None:
        """A Reservation at `now`: the GPUs its victims free go to no one else."""
        r = Reservation(job.id, self.now, placement)
        self.decisions.reservations.append(r)
        self._note_first(r)
        self.cap.hold(job.id, placement)
        self._took(placement, self.now, self.now + job.time_limit, job.id)
        self._preemptors.add(job.id)
        self._unsafe.clear()
        self.generation += 1

    def _place(self, job: Job):
        return find_placement(self.cap, job.num_nodes, job.gpus_per_node, job.max_leaves,
                              self.settings.topology_aware)

    def _would_place(self, job: Job, lifted: list[int]):
        """find_placement's verdict if reservations `lifted` lent their GPUs: NoFit or not.
        Decided from the counters when they can tell, else by lifting."""
        # Counts depend on the GPU count and the lifted set, not on the node count: jobs of
        # many shapes ask the same between two generations.
        key = (self.generation, job.gpus_per_node, frozenset(lifted))
        found = self._fitting.get(key)
        if found is None:
            if self._fitting and next(iter(self._fitting))[0] != self.generation:
                self._fitting.clear()  # capacity changed since: all stale
            found = self._fitting[key] = self._lent(job, lifted)
        verdict = find_placement(self.cap, job.num_nodes, job.gpus_per_node, job.max_leaves,
                                 self.settings.topology_aware, what_if=found, pick=False)
        if verdict is None:  # carried counts, first fit under a leaf limit: they cannot tell
            verdict = find_placement(self.cap, job.num_nodes, job.gpus_per_node, job.max_leaves,
                                     self.settings.topology_aware, what_if=self._lent(job, lifted), pick=False)
        return verdict

    def _place_lent(self, job: Job, lenders: list[int]) -> tuple[object, Placement | None]:
        """find_placement's picks, and the placement they make, as if reservations `lenders`
        lent their GPUs; their holds stay (the Capacity is as before)."""
        what_if = self._fitting.get((self.generation, job.gpus_per_node, frozenset(lenders)))
        if not isinstance(what_if, WhatIf):  # _would_place's, just asked, unless carried counts
            what_if = self._lent(job, lenders)
        picks = find_placement(self.cap, job.num_nodes, job.gpus_per_node, job.max_leaves,
                               self.settings.topology_aware, what_if=what_if)
        return picks, None if isinstance(picks, NoFit) else what_if.peek(picks)

    def _lent(self, job: Job, lenders: list[int]) -> WhatIf:
        """The Capacity as if reservations `lenders` lent their GPUs, for the job's GPU count."""
        what_if = WhatIf(self.cap, job.gpus_per_node)
        what_if.lift(lenders)
        return what_if

    def _why(self, job: Job, reason: Reason, unsafe: tuple[int, ...]) -> Reason:
        """Name the reservation the job would delay, if lifting holds (earliest first) lets it fit."""
        if not unsafe:
            return reason
        res = self.decisions.reservations
        if len(self._by_start) != len(res):  # reservations are only ever added: one more since
            self._by_start = sorted(res, key=lambda r: (r.start_time, r.job_id))
        lifted, culprit = [], None
        for r in self._by_start:
            if r.job_id in unsafe:
                lifted.append(r.job_id)
                if not isinstance(self._would_place(job, lifted), NoFit):
                    culprit = r
                    break
        if culprit is None:
            return reason
        found = self._culprits.get(culprit.job_id)
        if found is None:  # a reservation stays as made all cycle: so does the reason naming it
            found = self._culprits[culprit.job_id] = reasons.reservation(
                culprit.job_id, culprit.start_time, tuple(a.node for a in culprit.placement))
        return found

    def _reserve(self, job: Job) -> None:
        """Give a blocked job (one of the first `reservation_depth`) its place and time."""
        res = self.decisions.reservations
        if job.id != self.focus:  # explain's focus job is reserved whatever the depth
            if not self.settings.backfill:
                return  # strict FIFO reserves nothing
            if self._backfill_reserved >= self.settings.reservation_depth:
                return
        if self.profile is None and self.timeline.later:
            self._profile_due = True
            if self.settings.reservation_depth > DEEP:  # many to come: the profile's cursors win
                self._build_profile()
        if self.profile is None:
            found = earliest(self.cap, self.timeline, job, self.settings.topology_aware)
        else:
            found = self.profile.earliest(job.num_nodes, job.gpus_per_node, job.max_leaves, job.time_limit,
                                          self.settings.topology_aware)
        if found is None:
            return
        r = Reservation(job.id, found[0], found[1])
        res.append(r)
        self._note_first(r)
        self._backfill_reserved += job.id != self.focus
        # With this new hold lifted too, the capacity is what it was before it: the fitting
        # counts known now stay right for the next generation (the job held nothing yet). The
        # counts only: a WhatIf would read the new hold where it places.
        carried = {} if self._deep() else {
            (g + 1, gpus, lifted | {job.id}): Fitting(counts.have, counts.counts)
            for (g, gpus, lifted), counts in self._fitting.items() if g == self.generation}
        self.cap.hold(job.id, r.placement)
        self._took(r.placement, r.start_time, r.start_time + job.time_limit, job.id)
        self._unsafe.clear()
        self.generation += 1
        if job.id not in self._preemptors:  # a preemptor's own hold would still be there
            self._fitting = carried

    def _build_profile(self) -> None:
        self.profile = Profile(self.cap, self.now, self.snapshot.running)
        for placement, start, end in self._taken:
            self.profile.occupy_placement(placement, start, end)
        self.timeline = None  # the profile answers from now on

    def _note_first(self, r: Reservation) -> None:
        if self._first is None or (r.start_time, r.job_id) < (self._first.start_time, self._first.job_id):
            self._first = r

    def _start(self, job: Job, placement: Placement, borrowing: bool) -> None:
        self.decisions.starts.append(Start(job.id, placement, borrowing))
        self.usage.add(job)
        self.generation += 1
        self._took(placement, self.now, self.now + job.time_limit)
        if self._busy is not None and job.mig is None:
            self._busy.occupy(placement)

    def _took(self, placement: Placement, start: float, end: float, owner: int | None = None) -> None:
        """GPUs taken over [start, end) by a start or by reservation `owner`: the timeline or
        the profile must know."""
        if self.timeline is not None:
            self.timeline.taken(placement, end, owner, start)
        if self.profile is not None:
            self.profile.occupy_placement(placement, start, end)
        elif self.reserving:
            self._taken.append((placement, start, end))




def eligible_since(job: Job) -> float:
    """When the job became eligible to start: its submit time, or its begin time if later. (The
    core does not see when a dependency was met: such a job counts from its submit time.)"""
    return job.submit_time if job.begin_time is None else max(job.submit_time, job.begin_time)


# Reservations past which starts are decided on the profile (Cycle._deep).
DEEP = 8
