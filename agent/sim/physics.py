"""Vehicle physics of the reference EV: one rear motor, a 96-series pack, a coolant loop.

Everything is in SI units inside (m/s, N, W, rad) except where a field name says otherwise; the
conversion to the DBC's units (km/h, deg, kW) happens here, once, in :class:`VehicleState`.

The model is deliberately small but self-consistent, so that the signals on the bus tell one story:

* longitudinal: motor torque (constant up to the base speed, constant power above it, derated when hot)
  through a fixed reduction; aerodynamic drag and rolling resistance; friction brakes; regenerative
  braking when the accelerator is lifted below ``COAST_PEDAL`` ("one-pedal" driving), fading out at
  walking pace. Traction control caps the drive force at what the rear tyres transmit, ABS caps the
  braking force at what all four transmit.
* lateral: a kinematic bicycle. The path curvature gives the yaw rate (``v * k``), the lateral
  acceleration (``v^2 * k``), the heading (the integral of the yaw rate) and, through the steering ratio
  and an understeer gradient, the steering-wheel angle.
* electrical: pack open-circuit voltage from the state of charge, terminal voltage sagging through an
  internal resistance (higher when cold), state of charge integrated from the current, cell spread.
* thermal: motor, battery and coolant lumped masses; losses heat them, a thermostatic radiator cools
  the coolant toward ambient.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

GRAVITY = 9.81
AIR_DENSITY = 1.225
COAST_PEDAL = 0.15  # accelerator travel at which the motor neither drives nor regenerates

GEAR_P, GEAR_R, GEAR_N, GEAR_D = 0, 1, 2, 3


@dataclass(frozen=True)
class VehicleParams:
    """Constants of the reference car (a mid-size rear-drive EV sedan)."""

    mass: float = 1930.0  # kg, with driver
    rotating_mass_factor: float = 1.04
    drag_coefficient: float = 0.23
    frontal_area: float = 2.22  # m^2
    rolling_resistance: float = 0.011
    wheel_radius: float = 0.334  # m
    gear_ratio: float = 9.04
    driveline_efficiency: float = 0.97
    peak_torque: float = 420.0  # Nm, constant up to the base speed ...
    peak_power: float = 211_000.0  # W ... then constant power
    max_rpm: float = 17_500.0
    regen_torque: float = 220.0  # Nm
    regen_power: float = 75_000.0  # W
    brake_demand_g: float = 1.25  # full brake pedal asks for more than any tyre gives
    traction_share: float = 0.58  # share of the weight on the driven axle while accelerating
    wheelbase: float = 2.875  # m
    steering_ratio: float = 13.0
    understeer: float = 0.0025  # rad of road-wheel angle per m/s^2 of lateral acceleration
    cells_series: int = 96
    capacity_ah: float = 220.0
    internal_resistance: float = 0.075  # ohm at 25 degC
    aux_power: float = 450.0  # W: 12 V loads, pumps, climate
    motor_heat_capacity: float = 9_000.0  # J/K
    battery_heat_capacity: float = 420_000.0
    coolant_heat_capacity: float = 25_000.0
    motor_to_coolant: float = 55.0  # W/K
    battery_to_coolant: float = 120.0
    radiator_closed: float = 25.0  # W/K with the thermostat closed
    radiator_open: float = 180.0  # W/K when open, plus the ram air below
    radiator_per_speed: float = 20.0  # W/K per m/s
    motor_derate_temp: float = 140.0  # degC: torque derates above this
    motor_warn_temp: float = 130.0
    battery_warn_temp: float = 50.0
    coolant_warn_temp: float = 85.0

    @property
    def effective_mass(self) -> float:
        return self.mass * self.rotating_mass_factor

    @property
    def capacity_kwh(self) -> float:
        return self.cells_series * 3.7 * self.capacity_ah / 1000.0


@dataclass(frozen=True)
class Controls:
    """What the driver does during one step."""

    accel_pedal: float  # 0..1
    brake_pedal: float  # 0..1
    gear: int
    curvature: float  # 1/m, positive to the left


@dataclass
class VehicleState:
    """Everything the bus reports, already in the DBC's units."""

    speed_kmh: float = 0.0
    accel: float = 0.0  # m/s^2 as measured (with sensor noise)
    lat_accel: float = 0.0  # m/s^2 as measured
    yaw_rate: float = 0.0  # deg/s as measured
    heading: float = 0.0  # deg, compass
    steering_angle: float = 0.0  # deg at the steering wheel
    steering_rate: float = 0.0  # deg/s
    motor_rpm: float = 0.0
    motor_torque: float = 0.0  # Nm
    accel_pedal: float = 0.0  # %
    brake_pedal: float = 0.0  # %
    gear: int = GEAR_P
    pack_voltage: float = 0.0
    pack_current: float = 0.0  # A, positive = discharge
    pack_power: float = 0.0  # kW
    soc: float = 80.0  # %
    energy_kwh: float = 0.0
    max_discharge_kw: float = 0.0
    max_regen_kw: float = 0.0
    cell_v_min: float = 0.0
    cell_v_max: float = 0.0
    cell_t_min: float = 0.0
    cell_t_max: float = 0.0
    motor_temp: float = 20.0
    battery_temp: float = 20.0
    coolant_temp: float = 20.0
    odometer_km: float = 0.0
    abs_active: bool = False
    tc_active: bool = False
    overheat: bool = False
    distance_m: float = 0.0  # this drive only


def clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


class Vehicle:
    """Integrates the car one step at a time; ``state`` is what the bus reports."""

    def __init__(self, rng: random.Random, params: VehicleParams | None = None) -> None:
        self.p, self.rng = params or VehicleParams(), rng
        self.ambient = rng.uniform(8.0, 30.0)
        self.mu = rng.uniform(0.9, 1.0)  # dry asphalt
        self.cell_imbalance = rng.uniform(0.004, 0.015)  # V
        self.speed = 0.0  # m/s, true
        self._soc = rng.uniform(0.55, 0.92)
        soak = rng.uniform(0.0, 15.0)
        self.state = VehicleState(
            heading=rng.uniform(0.0, 360.0),
            odometer_km=rng.uniform(3_000.0, 80_000.0),
            motor_temp=self.ambient + soak,
            coolant_temp=self.ambient + soak,
            battery_temp=self.ambient + rng.uniform(2.0, 12.0),
        )
        self._abs_phase = 0.0
        self.cooling = 1.0  # share of the radiator's capacity left: below 1 only while a fault is on
        self._electrical(0.0, 0.0, 0.0)

    # -- what the driver (and the feed-forward of its pedal model) can know about the car -------------
    def motor_speed(self) -> float:  # rad/s
        return self.speed / self.p.wheel_radius * self.p.gear_ratio

    def _torque_to_force(self, torque: float) -> float:
        return torque * self.p.gear_ratio * self.p.driveline_efficiency / self.p.wheel_radius

    def drive_torque_limit(self) -> float:
        p, omega = self.p, self.motor_speed()
        torque = p.peak_torque if omega * p.peak_torque <= p.peak_power else p.peak_power / omega
        if omega * 60.0 / (2.0 * math.pi) >= p.max_rpm:
            torque = 0.0
        hot = self.state.motor_temp - p.motor_derate_temp
        derate = clamp(1.0 - hot / 40.0, 0.4, 1.0) if hot > 0 else 1.0
        battery_limit = self.state.max_discharge_kw * 1000.0 * 0.92 / max(omega, 1.0)
        return min(torque * derate, battery_limit)

    def regen_torque_limit(self) -> float:
        p, omega = self.p, self.motor_speed()
        fade = clamp((self.speed - 1.0) / 3.0, 0.0, 1.0)  # no regen at walking pace
        power = min(p.regen_power, self.state.max_regen_kw * 1000.0)
        return min(p.regen_torque, power / max(omega, 1.0)) * fade

    def drive_force_limit(self) -> float:
        return self._torque_to_force(self.drive_torque_limit())

    def regen_force_limit(self) -> float:
        return self._torque_to_force(self.regen_torque_limit())

    def resistance(self) -> float:
        """Drag plus rolling resistance now, in N."""
        p, v = self.p, self.speed
        rolling = p.rolling_resistance * p.mass * GRAVITY if v > 0.0 else 0.0
        return 0.5 * AIR_DENSITY * p.drag_coefficient * p.frontal_area * v * v + rolling

    # -- one step ------------------------------------------------------------------------------------
    def step(self, dt: float, controls: Controls) -> None:
        p, s, v = self.p, self.state, self.speed
        driving = controls.gear == GEAR_D
        accel_pedal = clamp(controls.accel_pedal, 0.0, 1.0)
        brake_pedal = clamp(controls.brake_pedal, 0.0, 1.0)
        if not driving:
            request = 0.0
        elif accel_pedal >= COAST_PEDAL:
            request = (accel_pedal - COAST_PEDAL) / (1.0 - COAST_PEDAL) * self.drive_torque_limit()
        else:
            request = -(COAST_PEDAL - accel_pedal) / COAST_PEDAL * self.regen_torque_limit()
        torque = s.motor_torque + (request - s.motor_torque) * min(1.0, dt / 0.05)  # inverter response

        traction = self.mu * p.mass * GRAVITY * p.traction_share
        tc_active = self._torque_to_force(torque) > traction
        if tc_active:  # cut the torque back to a little under the grip limit, with the usual hunting
            torque *= traction * self.rng.uniform(0.9, 0.97) / self._torque_to_force(torque)
        drive_force = self._torque_to_force(torque)

        grip = self.mu * p.mass * GRAVITY
        brake_force = brake_pedal * p.brake_demand_g * p.mass * GRAVITY if controls.gear != GEAR_P else 0.0
        over_grip = brake_force + max(0.0, -drive_force) > 0.97 * grip
        abs_active = over_grip and v > 1.5
        if abs_active:  # regen is cut, the friction brake pressure cycles around peak slip
            self._abs_phase += dt * 2.0 * math.pi * 7.0
            torque, drive_force = 0.0, 0.0
            brake_force = grip * (0.9 + 0.05 * math.sin(self._abs_phase))
        elif over_grip and v > 0.0:  # below the ABS cut-out speed the wheels lock and slide
            brake_force = 0.8 * grip - max(0.0, -drive_force)

        if v > 0.0:
            net = drive_force - self.resistance() - brake_force
            new_v = max(0.0, v + net / p.effective_mass * dt)
        else:  # standing: the brakes and the rolling resistance can only hold the car
            net = drive_force - brake_force - p.rolling_resistance * p.mass * GRAVITY
            new_v = max(0.0, net) / p.effective_mass * dt
        if controls.gear == GEAR_P:
            new_v = 0.0
        accel = (new_v - v) / dt
        self.speed = new_v
        ds = 0.5 * (v + new_v) * dt

        # lateral: kinematic bicycle with understeer
        yaw = new_v * controls.curvature
        lat = new_v * yaw
        road_wheel = math.atan(p.wheelbase * controls.curvature) + p.understeer * lat
        steering = math.degrees(road_wheel) * p.steering_ratio
        s.steering_rate = (steering - s.steering_angle) / dt
        s.steering_angle = steering
        s.heading = (s.heading - math.degrees(yaw * dt)) % 360.0
        s.yaw_rate = math.degrees(yaw) + self.rng.gauss(0.0, 0.05)
        s.lat_accel = lat + self.rng.gauss(0.0, 0.03)
        s.accel = accel + self.rng.gauss(0.0, 0.03)

        s.speed_kmh = new_v * 3.6
        s.motor_torque = torque
        s.motor_rpm = self.motor_speed() * 60.0 / (2.0 * math.pi)
        s.accel_pedal = accel_pedal * 100.0
        s.brake_pedal = brake_pedal * 100.0
        s.gear = controls.gear
        s.abs_active, s.tc_active = abs_active, tc_active
        s.distance_m += ds
        s.odometer_km += ds / 1000.0

        omega = self.motor_speed()
        mech = torque * omega
        loss = (250.0 if driving else 0.0) + 0.035 * abs(mech) + 0.02 * torque * torque
        self._electrical(mech + loss, loss, dt)

    def _electrical(self, drive_power: float, motor_loss: float, dt: float) -> None:
        """Pack current, voltage, SoC, limits, cells and temperatures for one step (dt may be 0)."""
        p, s = self.p, self.state
        cold = max(0.0, 25.0 - s.battery_temp)
        resistance = p.internal_resistance * (1.0 + 0.025 * cold)
        ocv = p.cells_series * (3.40 + 0.72 * self._soc)
        power = drive_power + p.aux_power
        power = min(power, ocv * ocv / (4.0 * resistance) * 0.9)  # never past the maximum-power point
        current = (ocv - math.sqrt(ocv * ocv - 4.0 * resistance * power)) / (2.0 * resistance)
        voltage = ocv - current * resistance
        self._soc = clamp(self._soc - current * dt / (3600.0 * p.capacity_ah), 0.0, 1.0)
        s.pack_current, s.pack_voltage, s.pack_power = current, voltage, voltage * current / 1000.0
        s.soc = self._soc * 100.0
        s.energy_kwh = self._soc * p.capacity_kwh

        low = clamp(self._soc / 0.1, 0.2, 1.0)
        s.max_discharge_kw = 250.0 * low * clamp(1.0 - cold / 40.0, 0.3, 1.0)
        full = clamp((1.0 - self._soc) / 0.1, 0.0, 1.0)
        s.max_regen_kw = p.regen_power / 1000.0 * full * clamp(1.0 - cold / 25.0, 0.1, 1.0)

        cell = voltage / p.cells_series
        spread = self.cell_imbalance + 0.00012 * abs(current)
        s.cell_v_min, s.cell_v_max = cell - 0.6 * spread, cell + 0.4 * spread
        gradient = 0.2 * max(0.0, s.battery_temp - s.coolant_temp)
        s.cell_t_min, s.cell_t_max = s.battery_temp - 1.0 - gradient, s.battery_temp + 1.5 + gradient

        to_motor = p.motor_to_coolant * (s.motor_temp - s.coolant_temp)
        to_battery = p.battery_to_coolant * (s.battery_temp - s.coolant_temp)
        opening = clamp((s.coolant_temp - 35.0) / 10.0, 0.0, 1.0)  # thermostat
        radiator = p.radiator_closed + opening * (p.radiator_open + p.radiator_per_speed * self.speed)
        if self.cooling != 1.0:  # only the overheat personality's fault: no new float ops otherwise
            radiator *= self.cooling  # a seized fan and pump: the radiator and the pack's loop barely flow
            to_battery *= self.cooling
        s.motor_temp += (motor_loss - to_motor) / p.motor_heat_capacity * dt
        s.battery_temp += (current * current * resistance - to_battery) / p.battery_heat_capacity * dt
        heat = to_motor + to_battery - radiator * (s.coolant_temp - self.ambient)
        s.coolant_temp += heat / p.coolant_heat_capacity * dt
        hysteresis = 5.0 if s.overheat else 0.0
        s.overheat = (
            s.motor_temp > p.motor_warn_temp - hysteresis
            or s.battery_temp > p.battery_warn_temp - hysteresis
            or s.coolant_temp > p.coolant_warn_temp - hysteresis
        )
