"""The driver: five personalities, each a small stochastic state machine over one ``random.Random``.

A drive always runs ``park`` (gear P) -> ``shift`` (brake pressed, gear D) -> the personality's own states
-> ``final_stop`` (early enough to stop comfortably before the end) -> ``park_end`` (gear P). The
personality only chooses a target speed, how hard to get there and which manoeuvres to fly (turns,
curves, lane changes, emergency stops); a shared controller turns that into pedal positions with a
feed-forward model of the car, so the pedals, the torque and the motion agree with each other.

Manoeuvres are curvature profiles over *distance*, not time, so a turn of 90 degrees turns the car by
90 degrees whatever the speed it is driven at.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from agent.sim.physics import COAST_PEDAL, GEAR_D, GEAR_P, GRAVITY, Controls, Vehicle, clamp

PERSONALITIES: tuple[str, ...] = ("highway", "city", "aggressive", "panic_braking", "overheat")
KMH = 1.0 / 3.6


@dataclass(frozen=True)
class Style:
    accel: tuple[float, float]  # usual acceleration, m/s^2 (drawn per manoeuvre)
    decel: tuple[float, float]  # usual braking, m/s^2
    jerk: float  # m/s^3
    gain: float  # 1/s, speed error -> acceleration
    lat_accel: tuple[float, float]  # m/s^2 the driver accepts in turns
    pedal_tau: float  # s, how quickly the feet move


STYLES = {
    "highway": Style((1.4, 2.2), (1.0, 1.8), 2.0, 0.5, (1.5, 2.5), 0.30),
    "city": Style((1.2, 2.0), (1.5, 2.5), 3.0, 0.7, (2.0, 3.0), 0.25),
    "aggressive": Style((6.0, 10.0), (6.0, 9.8), 15.0, 1.5, (5.0, 6.5), 0.08),
    "panic_braking": Style((1.2, 2.0), (1.2, 2.2), 3.0, 0.6, (2.0, 3.0), 0.25),
    "overheat": Style((5.0, 8.0), (4.0, 7.0), 10.0, 1.2, (3.0, 4.5), 0.12),
}
FAULT_AT = 5.0  # s into the drive: the overheat personality's radiator fan fails
FAULT_COOLING = 0.02  # share of the radiator left: a seized fan and a clogged core
LIMP_MOTOR_C, LIMP_COOLANT_C = 155.0, 98.0  # the driver notices the derate and the gauge: pulls over
COOLED_MOTOR_C, COOLED_COOLANT_C = 110.0, 80.0  # ... and drives on gently once it has cooled


class Path:
    """One curvature manoeuvre at a time, advanced by the distance driven (none: straight ahead)."""

    def __init__(self) -> None:
        self.kind = ""
        self.length = 0.0
        self.done = 0.0
        self.peak = 0.0

    @property
    def busy(self) -> bool:
        return self.done < self.length

    def turn(self, angle: float, radius: float) -> bool:
        """Turn by ``angle`` rad (positive left) on a ``radius`` m arc, entered and left on clothoids.

        Like :meth:`lane_change`, does nothing and returns False while another manoeuvre is under way.
        """
        if self.busy:
            return False
        self.kind, self.done, self.peak = "arc", 0.0, math.copysign(1.0 / radius, angle)
        self.length = abs(angle) * radius / 0.75  # a quarter of the length on each transition
        return True

    def lane_change(self, offset: float, length: float) -> bool:
        """Move ``offset`` m sideways (positive left) over ``length`` m; the heading comes back."""
        if self.busy:
            return False
        self.kind, self.done, self.length = "sine", 0.0, length
        self.peak = 2.0 * math.pi * offset / (length * length)
        return True

    def advance(self, ds: float) -> float:
        if not self.busy:
            return 0.0
        self.done += ds
        u = min(self.done / self.length, 1.0)
        if self.kind == "sine":
            return self.peak * math.sin(2.0 * math.pi * u)
        return self.peak * clamp(min(u, 1.0 - u) / 0.25, 0.0, 1.0)


class Driver:
    """Produces the controls of one step from the personality, the clock and the car's state."""

    def __init__(self, personality: str, rng: random.Random, vehicle: Vehicle, duration: float) -> None:
        self.personality, self.rng, self.car, self.duration = personality, rng, vehicle, duration
        self.style = STYLES[personality]
        self.state, self.timer = "park", rng.uniform(1.5, 4.0)
        self.gear, self.target, self.base = GEAR_P, 0.0, 0.0
        self.accel_limit, self.decel_limit = 1.5, 2.0
        self.a_cmd, self.accel_pedal, self.brake_pedal = 0.0, 0.0, 0.0
        self.panic, self.panic_delay, self.panic_timer = False, 0.0, rng.uniform(12.0, 20.0)
        self.path, self.wander, self.wander_rate, self.last_distance = Path(), 0.0, 0.0, 0.0
        self.brake_hold, self.turn_radius, self.turn_angle = False, 10.0, math.pi / 2.0
        self.now, self.dt = 0.0, 0.01
        if personality == "overheat":  # off a long climb: the car starts warm (no rng draw: others unchanged)
            vehicle.state.coolant_temp += 55.0
            vehicle.state.motor_temp += 75.0
            vehicle.state.battery_temp += 10.0

    def _pick(self, bounds: tuple[float, float]) -> float:
        return self.rng.uniform(*bounds)

    def _go(self, target_kmh: float, accel: float | None = None, decel: float | None = None) -> None:
        self.target = target_kmh * KMH
        self.accel_limit = accel if accel is not None else self._pick(self.style.accel)
        self.decel_limit = decel if decel is not None else self._pick(self.style.decel)

    def _to(self, state: str, timer: float = 0.0) -> None:
        self.state, self.timer = state, timer

    def step(self, dt: float, now: float) -> Controls:
        v = self.car.speed
        self.now, self.dt = now, dt
        self.timer -= dt
        ending = now > self.duration - (v / 2.0 + 8.0)
        if ending and self.state not in ("park", "shift", "final_stop", "park_end", "panic"):
            self.panic = False
            self._go(0.0, decel=2.0)
            self._to("final_stop")
        if self.state == "park":
            self.target, self.brake_hold = 0.0, self.timer < 0.8
            if self.timer <= 0.0:
                self.gear = GEAR_D
                self._to("shift", self.rng.uniform(0.4, 1.0))
        elif self.state == "shift":
            if self.timer <= 0.0:
                self._to("start")
        elif self.state == "final_stop":
            if v == 0.0:
                self._to("park_end", self.rng.uniform(0.8, 1.5))
        elif self.state == "park_end":
            if self.timer <= 0.0:
                self.gear = GEAR_P
        else:
            getattr(self, f"_{self.personality}")(v)

        moved = self.car.state.distance_m - self.last_distance
        self.last_distance = self.car.state.distance_m
        # the hands wander a little around the path: a damped oscillator driven by noise, so it is smooth
        self.wander_rate += (-self.wander_rate / 0.4 - self.wander / 1.5) * dt
        self.wander_rate += self.rng.gauss(0.0, 0.12) * math.sqrt(dt)
        self.wander += self.wander_rate * dt
        curvature = self.path.advance(moved) + self.wander / max(v * v, 25.0) * min(1.0, v / 3.0)
        accel_pedal, brake_pedal = self._pedals(dt, v)
        return Controls(accel_pedal, brake_pedal, self.gear, curvature)

    # -- the shared longitudinal controller ------------------------------------------------------------
    def _pedals(self, dt: float, v: float) -> tuple[float, float]:
        if self.panic:  # foot off the accelerator at once, full brake after the reaction time
            self.panic_delay -= dt
            self.accel_pedal = 0.0
            if self.panic_delay <= 0.0:
                self.brake_pedal = min(1.0, self.brake_pedal + 8.0 * dt)
            self.a_cmd = self.car.state.accel
            return self.accel_pedal, self.brake_pedal
        if self.state in ("park", "shift", "park_end") or (self.target == 0.0 and v == 0.0):
            want_accel, want_brake = 0.0, (0.3 if self.state != "park" or self.brake_hold else 0.0)
            self.a_cmd = 0.0
        else:
            if self.target == 0.0:  # stopping: steady deceleration, eased over the last metres
                a_des = -self.decel_limit * min(1.0, 0.35 + v / 4.0)
            else:
                a_des = clamp(self.style.gain * (self.target - v), -self.decel_limit, self.accel_limit)
            jerk = self.style.jerk * dt
            self.a_cmd += clamp(a_des - self.a_cmd, -jerk, jerk)
            force = self.car.p.effective_mass * self.a_cmd + self.car.resistance()
            drive, regen = self.car.drive_force_limit(), self.car.regen_force_limit()
            want_brake = 0.0
            if force >= 0.0:
                want_accel = COAST_PEDAL + (1.0 - COAST_PEDAL) * min(1.0, force / max(drive, 1.0))
            elif regen > 0.0 and force >= -regen:
                want_accel = COAST_PEDAL * (1.0 + force / regen)
            else:
                want_accel = 0.0
                demand = self.car.p.brake_demand_g * self.car.p.mass * GRAVITY
                want_brake = min(1.0, (-force - regen) / demand)
        follow = min(1.0, dt / self.style.pedal_tau)
        self.accel_pedal += (want_accel - self.accel_pedal) * follow
        self.brake_pedal += (want_brake - self.brake_pedal) * (follow if want_brake > 0.0 else 1.0)
        return self.accel_pedal, self.brake_pedal

    # -- personalities: each is called every step while the drive is under way --------------------------
    def _highway(self, v: float) -> None:
        if self.state == "start":
            self.base = self.rng.uniform(100.0, 120.0)
            self._go(self.base)
            self._to("cruise", self.rng.uniform(15.0, 30.0))
        elif self.state == "cruise":
            self.target = (self.base + 3.0 * math.sin(self.now / 9.0)) * KMH
            if self.timer <= 0.0:
                event = self.rng.choices(("lane", "speed", "curve", "slow"), (0.45, 0.2, 0.2, 0.15))[0]
                side = self.rng.choice((-1.0, 1.0))
                if event == "lane":
                    self.path.lane_change(3.5 * side, max(v, 10.0) * self.rng.uniform(4.0, 7.0))
                elif event == "speed":
                    self.base = self.rng.uniform(100.0, 125.0)
                elif event == "curve":
                    self.path.turn(
                        side * math.radians(self.rng.uniform(10.0, 40.0)), self.rng.uniform(800, 2500)
                    )
                else:
                    self._go(self.rng.uniform(65.0, 90.0))
                    self._to("slow", self.rng.uniform(10.0, 25.0))
                    return
                self.timer = self.rng.uniform(8.0, 25.0)
        elif self.state == "slow" and self.timer <= 0.0:
            self._go(self.base)
            self._to("cruise", self.rng.uniform(10.0, 20.0))

    def _city(self, v: float) -> None:
        if self.state in ("start", "go"):
            self._go(self.rng.uniform(30.0, 50.0))
            self._to("cruise", self.rng.uniform(6.0, 18.0))
        elif self.state == "cruise" and self.timer <= 0.0:
            event = self.rng.choices(("light", "sign", "turn", "crawl", "go"), (0.35, 0.15, 0.3, 0.1, 0.1))[0]
            if event in ("light", "sign"):
                self._go(0.0)
                wait = self.rng.uniform(6.0, 25.0) if event == "light" else self.rng.uniform(1.0, 3.0)
                self._to("stop", wait)
            elif event == "turn":
                self._turn_ahead(self.rng.uniform(8.0, 15.0), math.pi / 2.0)
            elif event == "crawl":
                self._go(self.rng.uniform(8.0, 18.0))
                self._to("crawl", self.rng.uniform(5.0, 12.0))
            else:
                self._to("go")
        elif self.state == "stop":
            if v > 0.0:  # the wait starts once stopped
                self.timer += self.dt
            elif self.timer <= 0.0:
                self._to("go")
        elif self.state == "turn_ahead" and v <= self.target + 0.7:
            if self.path.turn(self.rng.choice((-1.0, 1.0)) * self.turn_angle, self.turn_radius):
                self._to("turning")
        elif (self.state == "turning" and not self.path.busy) or (
            self.state == "crawl" and self.timer <= 0.0
        ):
            self._to("go")

    def _turn_ahead(self, radius: float, angle: float) -> None:
        self.turn_radius, self.turn_angle = radius, angle
        self._go(math.sqrt(self._pick(self.style.lat_accel) * radius) / KMH)
        self._to("turn_ahead")

    def _aggressive(self, v: float) -> None:
        if self.state in ("start", "launch"):
            self._go(self.rng.uniform(70.0, 140.0))
            self._to("launching")
        elif self.state == "launching" and v >= self.target - 1.0:
            if self.rng.random() < 0.5:
                self.path.lane_change(self.rng.choice((-3.5, 3.5)), v * self.rng.uniform(2.5, 3.5))
            self._to("hot", self.rng.uniform(3.0, 10.0))
        elif self.state == "hot" and self.timer <= 0.0:
            stop = self.rng.random() < 0.5
            self._go(0.0 if stop else self.rng.uniform(20.0, 60.0))
            self._to("late_brake")
        elif self.state == "late_brake" and (v == 0.0 or (self.target > 0.0 and v <= self.target + 0.3)):
            if v == 0.0:
                self._to("wait", self.rng.uniform(2.0, 6.0))
            elif self.rng.random() < 0.5:
                angle = self.rng.uniform(45.0, 90.0) * self.rng.choice((-1.0, 1.0))
                radius = max(15.0, v * v / self._pick(self.style.lat_accel))
                self._to("turning" if self.path.turn(math.radians(angle), radius) else "launch")
            else:
                self._to("launch")
        elif (self.state == "wait" and self.timer <= 0.0) or (self.state == "turning" and not self.path.busy):
            self._to("launch")

    def _panic_braking(self, v: float) -> None:
        if v > 8.0:
            self.panic_timer -= self.dt
        if self.state == "panic":
            if v == 0.0:
                self.panic = False
                self._go(0.0)
                self._to("hold", self.rng.uniform(2.0, 5.0))
        elif self.panic_timer <= 0.0 and v > 8.0:
            self.panic, self.panic_delay = True, self.rng.uniform(0.15, 0.4)
            self.panic_timer = self.rng.uniform(20.0, 45.0)
            self._to("panic")
        elif self.state in ("start", "go") or (self.state in ("hold", "slow") and self.timer <= 0.0):
            self._go(self.rng.uniform(45.0, 80.0))
            self._to("cruise", self.rng.uniform(8.0, 20.0))
        elif self.state == "cruise" and self.timer <= 0.0:
            event = self.rng.choices(("lane", "curve", "speed", "slow"), (0.3, 0.3, 0.3, 0.1))[0]
            side = self.rng.choice((-1.0, 1.0))
            if event == "lane":
                self.path.lane_change(3.5 * side, max(v, 8.0) * self.rng.uniform(3.5, 6.0))
            elif event == "curve":
                self.path.turn(side * math.radians(self.rng.uniform(20.0, 60.0)), self.rng.uniform(150, 400))
            elif event == "speed":
                self._go(self.rng.uniform(45.0, 80.0))
            else:
                self._go(self.rng.uniform(20.0, 35.0))
                self._to("slow", self.rng.uniform(5.0, 10.0))
                return
            self.timer = self.rng.uniform(8.0, 20.0)

    def _overheat(self, v: float) -> None:
        """Hard laps with a failing radiator fan (on at ``FAULT_AT``), a stop to cool down, then gently on.

        The fan fault is intermittent: it clears while the car stands, so the temperatures fall back and
        the episodes end (the receiver's hysteresis), and it does not come back for the rest of the drive.
        """
        car = self.car.state
        if self.state in ("start", "launch", "launching", "hot", "late_brake") and self.now >= FAULT_AT:
            self.car.cooling = FAULT_COOLING
        if self.state in ("launch", "launching", "hot", "late_brake") and (
            car.motor_temp > LIMP_MOTOR_C or car.coolant_temp > LIMP_COOLANT_C
        ):
            self._go(0.0, decel=3.0)
            self._to("pull_over")
        elif self.state in ("start", "launch"):
            self._go(self.rng.uniform(110.0, 150.0))
            self._to("launching")
        elif self.state == "launching" and v >= self.target - 1.0:
            self._to("hot", self.rng.uniform(2.0, 5.0))
        elif self.state == "hot" and self.timer <= 0.0:
            self._go(self.rng.uniform(30.0, 60.0))
            self._to("late_brake")
        elif self.state == "late_brake" and v <= self.target + 0.3:
            self._to("launch")
        elif self.state == "pull_over" and v == 0.0:
            self.car.cooling = 1.0
            self._to("cooling")
        elif (
            self.state == "cooling"
            and car.motor_temp < COOLED_MOTOR_C
            and car.coolant_temp < COOLED_COOLANT_C
        ):
            self._go(self.rng.uniform(30.0, 50.0), accel=1.2, decel=1.5)
            self._to("gentle")
